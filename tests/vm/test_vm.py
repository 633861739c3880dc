"""Tests that need a kernel feature this machine's kernel lacks, run inside a VM that has it.

The kernel WireGuard tests (driver level, and two forwarders over gRPC) skip on this machine's
kernel, which has no WireGuard. Here a Debian kernel that has it boots under qemu over this very
file system (tests/vm/machine.py) and runs them with pytest; this test passes only if every one of
them ran and passed there (none skipped). ``NSM_TEST_TIME_FACTOR`` stretches the tests' waits in
the guest, since software emulation is tens of times slower.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.vm import machine

ROOT = Path(__file__).resolve().parents[2]
GUEST_TESTS = (
    "tests/drivers/test_kernel_wireguard.py",
    "tests/remote/test_remote.py::test_remote_wireguard_through_the_kernel_module",
)
#: at least this many guest tests must have run (a renamed test must not vanish silently)
MIN_GUEST_TESTS = 7

ASSETS = machine.find_assets()
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or ASSETS is None or bool(machine.missing_tools()),
    reason=(
        "needs root, qemu-system-x86 busybox-static kmod and the VM kernel: "
        "python -m tests.vm.machine (bash .ci/dev test does both)"
    ),
)


@pytest.mark.timeout(1200)
def test_kernel_wireguard_tests_pass_in_a_vm_whose_kernel_has_it(tmp_path: Path) -> None:
    assert ASSETS is not None
    command = " ".join(
        [
            f"cd {ROOT} &&",
            sys.executable,
            *("-m", "pytest", "-q", "-p", "no:cacheprovider", "--color=no", "-rs"),
            "--junitxml=/run/out/junit.xml",
            *GUEST_TESTS,
        ]
    )
    result = machine.run(
        ASSETS, command, tmp_path, env={"NSM_TEST_TIME_FACTOR": "10"}, timeout=1100
    )
    tail = result.console[-4000:]
    assert result.rc is not None, f"the VM never finished ({result.seconds:.0f} s):\n{tail}"
    assert result.rc == 0, f"pytest in the VM exited {result.rc}:\n{tail}"
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] >= MIN_GUEST_TESTS, counts
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, f"{counts}\n{tail}"
    print(f"{counts['tests']} tests passed in the VM; boot and run {result.seconds:.0f} s")

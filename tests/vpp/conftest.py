"""A VPP for the VPP driver's tests, in a node namespace of a two-node underlay.

By default it is the protocol-level VPP of :mod:`tests.vpp.peer`. With ``NSM_TEST_VPP_RUN`` set
to a command that runs a real VPP in the foreground (``<command> <runtime dir> <netns>``: API
socket ``<dir>/api.sock``, stats socket ``<dir>/stats.sock``), the same tests run against that
VPP instead (its API definitions from ``NSM_TEST_VPP_API_DIR`` or the real VPP's own); tests
that need the fake's fault switches are skipped then. Assertions read VPP through its API (a
``VPPApiClient`` of the test's own), so they hold for both.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from nsm_forwarder.drivers import base
from nsm_forwarder.drivers.plan import KERNEL_INTERFACE, MEMIF, VXLAN, Offer
from nsm_forwarder.drivers.vpp.driver import VppDriver
from tests.helpers import IS_ROOT, Underlay, make_underlay, netns_executor, sh, wait_until
from tests.vpp.peer import FakeVPP
from tests.vpp.peer.apidefs import default_api_dir

RUN_ENV = "NSM_TEST_VPP_RUN"
REAL = bool(os.environ.get(RUN_ENV))
fake_only = pytest.mark.skipif(REAL, reason="needs the test VPP's fault switches")
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces)")
#: the VPP driver's offer, as its init reports it
VPP_OFFER = Offer(driver="vpp", local=(MEMIF, KERNEL_INTERFACE), remote=(VXLAN,))


@dataclass
class VppHost:
    """One VPP (fake or real) serving ``runtime/api.sock`` inside node namespace ``netns``: a
    real one when ``run`` (default ``$NSM_TEST_VPP_RUN``) names a command, else the fake."""

    netns: str
    runtime: str
    run: str = field(default_factory=lambda: os.environ.get(RUN_ENV, ""))
    fake: FakeVPP | None = None
    proc: subprocess.Popen[bytes] | None = None
    api_dir: str = field(default_factory=lambda: str(default_api_dir()))

    @property
    def api_socket(self) -> str:
        return os.path.join(self.runtime, "api.sock")

    @property
    def stats_socket(self) -> str:
        return os.path.join(self.runtime, "stats.sock")

    def start(self) -> None:
        if not self.run:
            self.fake = FakeVPP(
                api_socket=self.api_socket,
                stats_socket=self.stats_socket,
                netns=self.netns,
                api_dir=self.api_dir,
            ).start()
            return
        command = [*shlex.split(self.run), self.runtime, self.netns]
        log = open(os.path.join(self.runtime, "vpp.out"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
        wait_until(lambda: os.path.exists(self.api_socket), 20, "VPP's API socket")
        time.sleep(0.2)

    def stop(self) -> None:
        if self.fake is not None:
            self.fake.stop()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def restart(self) -> None:
        """VPP crashes and comes back with nothing (as a real VPP restart does)."""
        if self.fake is not None:
            self.fake.restart(down_for=0.3, wait=True)
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.api_socket)
        self.start()

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        from vpp_papi import VPPApiClient

        client = VPPApiClient(apidir=self.api_dir, server_address=self.api_socket)
        client.connect("nsm-test")
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.disconnect()

    def ours(self) -> list[Any]:
        """Every VPP interface carrying one of this forwarder's tags."""
        with self.client() as c:
            mine = f"{base.TAG_PREFIX}"
            return [
                d
                for d in c.api.sw_interface_dump(sw_if_index=0xFFFFFFFF)
                if str(d.tag).startswith(mine)
            ]

    def interfaces(self) -> list[Any]:
        with self.client() as c:
            return list(c.api.sw_interface_dump(sw_if_index=0xFFFFFFFF))

    def xconnects(self) -> dict[int, int]:
        with self.client() as c:
            return {int(x.rx_sw_if_index): int(x.tx_sw_if_index) for x in c.api.l2_xconnect_dump()}

    def memif_sockets(self) -> dict[int, str]:
        with self.client() as c:
            return {
                int(s.socket_id): str(s.socket_filename) for s in c.api.memif_socket_filename_dump()
            }


class DriverThread:
    """A VppDriver whose every call runs in one thread inside the node namespace, as a worker
    process of a forwarder running there would."""

    def __init__(self, node: str, src_ip: str, vpp: VppHost, **config: Any) -> None:
        self.driver = VppDriver()
        self.config = {
            "src_ip": src_ip,
            "vxlan_port": 4789,
            "vpp_api_socket": vpp.api_socket,
            "vpp_api_dir": vpp.api_dir,
            "vpp_stats_socket": vpp.stats_socket,
            "vpp_connect_timeout": 5.0,
            "operation_timeout": 5.0,
            "vpp_allow_vhost": True,
            **config,
        }

        self.thread = netns_executor(node)

    def call(self, method: str, *args: Any) -> Any:
        return self.thread.submit(getattr(self.driver, method), *args).result(60)

    def init(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("init", self.config)
        return result

    def close(self) -> None:
        self.thread.submit(self.driver.vpp.close).result(10)
        self.thread.submit(self.driver.sockets.close).result(10)
        self.thread.shutdown()


@dataclass
class VppBed:
    """Underlay node ``a`` runs VPP (and the driver); ``b`` is the far node of tunnels."""

    underlay: Underlay
    vpp: VppHost
    drivers: list[DriverThread] = field(default_factory=list)

    def driver(self, **config: Any) -> DriverThread:
        d = DriverThread(self.underlay.a, self.underlay.a_ip, self.vpp, **config)
        self.drivers.append(d)
        d.init()
        return d

    def forwarder_env(self, **extra: str) -> dict[str, str]:
        """The environment of a forwarder of driver vpp in node A, using this VPP."""
        return {
            "NSM_FORWARDER_DRIVER": "vpp",
            "NSM_FORWARDER_SRC_IP": self.underlay.a_ip,
            "NSM_FORWARDER_VPP_API_SOCKET": self.vpp.api_socket,
            "NSM_FORWARDER_VPP_API_DIR": self.vpp.api_dir,
            "NSM_FORWARDER_VPP_STATS_SOCKET": self.vpp.stats_socket,
            **extra,
        }

    def node_links(self) -> list[str]:
        out = sh("ip", "-n", self.underlay.a, "-o", "link", "show")
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


@pytest.fixture
def vpp_bed() -> Iterator[VppBed]:
    if not IS_ROOT:
        pytest.skip("needs root (network namespaces)")
    underlay = make_underlay()
    runtime = tempfile.mkdtemp(prefix="nvpp", dir="/tmp")
    vpp = VppHost(underlay.a, runtime)
    bed = VppBed(underlay, vpp)
    try:
        vpp.start()
        yield bed
        if vpp.fake is not None:  # the driver only sends what VPP knows, and the fake coped
            assert vpp.fake.errors == [] and vpp.fake.unhandled == []
    finally:
        for d in bed.drivers:
            with contextlib.suppress(Exception):
                d.close()
        vpp.stop()
        underlay.delete()
        shutil.rmtree(runtime, ignore_errors=True)

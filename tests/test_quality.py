"""Hand-written code stays ruff- and mypy-clean (generated protobuf stubs are excluded)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the hand-written packages, each installed as nsm_forwarder.<name>
PACKAGES = ("actors", "tools", "drivers", "config")
CODE = [*PACKAGES, "proto/generate.py", "tests"]


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return path


def _run(*cmd: str) -> None:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_quality_ruff_lint() -> None:
    _run(_tool("ruff"), "check", *CODE)


def test_quality_ruff_format() -> None:
    _run(_tool("ruff"), "format", "--check", *CODE)


def test_quality_mypy(tmp_path: Path) -> None:
    """mypy sees the installed names (nsm_forwarder.actors, ...) through a symlinked package
    root, so imports between the folders are type-checked rather than taken as Any; the tests
    are checked too."""
    root = tmp_path / "nsm_forwarder"
    root.mkdir()
    for folder in (*PACKAGES, "proto"):
        (root / folder).symlink_to(ROOT / folder, target_is_directory=True)
    packages = [a for p in PACKAGES for a in ("-p", f"nsm_forwarder.{p}")]
    packages += ["-p", "tests"]
    done = subprocess.run(
        [
            _tool("mypy"),
            "--namespace-packages",
            "--explicit-package-bases",
            *packages,
            "-m",
            "nsm_forwarder.proto.generate",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MYPYPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""Hand-written code stays ruff- and mypy-clean (generated protobuf stubs are excluded)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE = ["actors", "drivers", "config", "proto/generate.py", "tests"]


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


def test_quality_mypy() -> None:
    _run(_tool("mypy"), "actors", "drivers", "config", "proto/generate.py")

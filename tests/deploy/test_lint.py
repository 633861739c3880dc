"""The deployment files are lint-clean: yamllint (.yamllint.yaml), hadolint (.hadolint.yaml,
through its PyPI wrapper) and ruff on docker/'s Python."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.manifests import DOCKER, ROOT
from tests.test_quality import _tool


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_lint_yamllint_is_clean() -> None:
    listed = run(_tool("yamllint"), "--list-files", ".")
    assert "docker/kubernetes/base/daemonset.yaml" in listed.stdout, listed.stdout
    done = run(_tool("yamllint"), "--strict", "--format", "parsable", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_lint_yamllint_config_catches_a_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("enabled: yes\n")
    done = run(_tool("yamllint"), "--strict", "-c", str(ROOT / ".yamllint.yaml"), str(bad))
    assert done.returncode != 0 and "truthy" in done.stdout


def test_lint_hadolint_is_clean() -> None:
    done = run(_tool("hadolint"), "--config", ".hadolint.yaml", "docker/Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_lint_hadolint_config_catches_a_problem(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm\nRUN apt-get install -y curl\n")
    done = run(_tool("hadolint"), "--config", ".hadolint.yaml", str(bad))
    assert done.returncode != 0 and "DL3008" in done.stdout, done.stdout


def test_lint_docker_python_is_ruff_clean() -> None:
    files = [str(p.relative_to(ROOT)) for p in DOCKER.rglob("*.py")]
    assert files
    for args in (["check"], ["format", "--check"]):
        done = run(_tool("ruff"), *args, *files)
        assert done.returncode == 0, done.stdout + done.stderr

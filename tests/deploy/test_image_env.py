"""The image's Python environment, built here the way docker/Dockerfile builds it, and started.

No container engine runs here, so the test repeats what the Dockerfile does, reading it from the
Dockerfile itself so the two cannot drift: the build context is a copy made by .dockerignore's
rules; the build stage's ENV and its pip install RUN line run in that copy, with the Python of
the base image's minor version and a fresh venv in place of /opt/nsm-forwarder. The one change:
``--no-cache-dir`` is dropped, so pip's cache makes the test fast (the cache changes nothing that
gets installed). Then the runtime stage's ENTRYPOINT + CMD start from that venv, with the
runtime ENV PATH, to readiness, the image's healthcheck passes, and SIGTERM ends it with 0.

Needs root (the forwarder's workers open netlink sockets in namespaces) and PyPI.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.manifests import DOCKER, ROOT
from tests.helpers import IS_ROOT, wait_until

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root (the forwarder's workers)")

IMAGE_VENV = "/opt/nsm-forwarder"
IMAGE_SRC = "/src"


@dataclass
class Stage:
    name: str
    base: str
    env: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            logical += line[:-1]
            continue
        logical += line
        word, _, rest = logical.strip().partition(" ")
        yield word.upper(), rest.strip()
        logical = ""


def stages(text: str) -> dict[str, Stage]:
    args: dict[str, str] = {}
    found: dict[str, Stage] = {}
    stage: Stage | None = None
    for word, rest in instructions(text):
        if word == "ARG" and stage is None and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
        elif word == "FROM":
            base, _, name = rest.partition(" AS ")
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
            stage = found[name] = Stage(name, base)
            if base in found:  # FROM an earlier stage inherits its ENV and ENTRYPOINT
                parent = found[base]
                stage.env, stage.entrypoint, stage.cmd = (
                    dict(parent.env),
                    parent.entrypoint,
                    parent.cmd,
                )
        elif stage is None:
            continue
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stage.env[key] = value
        elif word == "RUN":
            stage.runs.append(rest)
        elif word == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest)  # exec form
        elif word == "CMD":
            stage.cmd = json.loads(rest)
    return found


def dockerignore_keeps(rules: list[str], path: str) -> bool:
    """Whether .dockerignore lets ``path`` (relative, with /) into the build context: the last
    rule matching the path or one of its parent folders decides; ``!`` re-includes. The rules
    used here need only Go's ``*`` (within one path element) and a leading ``**/``."""
    keep = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        else:
            hit = any(
                len(p.split("/")) == len(pattern.split("/"))
                and all(
                    fnmatch.fnmatchcase(a, b)
                    for a, b in zip(p.split("/"), pattern.split("/"), strict=True)
                )
                for p in prefixes
            )
        if hit:
            keep = negate
    return keep


def build_context(dest: Path) -> list[str]:
    """Copy what .dockerignore lets in from the repository (tracked and untracked files that git
    does not ignore) to ``dest``; return the relative paths copied."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    copied = []
    for rel in filter(None, listed):
        if (ROOT / rel).is_file() and dockerignore_keeps(rules, rel):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
            copied.append(rel)
    return copied


def image_python(base: str) -> str:
    """An interpreter of the base image's Python minor version (python:3.11... -> 3.11)."""
    match = re.match(r"python:(\d+\.\d+)", base)
    assert match, f"the base image {base} is not an official python image"
    minor = match.group(1)
    if f"{sys.version_info.major}.{sys.version_info.minor}" == minor:
        return str(getattr(sys, "_base_executable", sys.executable))
    found = shutil.which(f"python{minor}")
    if found is None:
        pytest.skip(f"no Python {minor} here (the image's)")
    return found


@dataclass
class ImageEnv:
    venv: Path
    runtime: Stage
    context: list[str]

    def env(self) -> dict[str, str]:
        """The environment of the image's runtime stage, on this machine's paths."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NSM_", "FORWARDER_"))}
        for key, value in self.runtime.env.items():
            value = value.replace("$PATH", os.environ["PATH"])
            env[key] = value.replace(IMAGE_VENV, str(self.venv))
        return env


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    found = stages((DOCKER / "Dockerfile").read_text())
    build, runtime = found["build"], found["runtime"]
    [install] = [r for r in build.runs if "pip install" in r]
    tmp = tmp_path_factory.mktemp("image")
    src, venv, bindir = tmp / "src", tmp / "venv", tmp / "bin"
    src.mkdir()
    bindir.mkdir()
    (bindir / "python").symlink_to(image_python(build.base))
    context = build_context(src)
    command = install.replace(IMAGE_VENV, str(venv)).replace(IMAGE_SRC, str(src))
    command = command.replace(" --no-cache-dir", "")
    env = dict(os.environ, **build.env, PATH=f"{bindir}:{os.environ['PATH']}")
    done = subprocess.run(
        ["sh", "-c", command], cwd=src, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return ImageEnv(venv, runtime, context)


def test_image_context_holds_what_the_dockerfile_copies(image_env: ImageEnv) -> None:
    context = set(image_env.context)
    assert {"pyproject.toml", "README.md", "docker/healthcheck.py"} <= context
    assert "docker/vpp/startup.conf" in context
    assert not any(p.startswith(("tests/", ".git", "docs/")) for p in context), sorted(context)
    mode = subprocess.run(
        ["git", "ls-files", "-s", "docker/healthcheck.py"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert mode.startswith("100755"), "the healthcheck keeps its executable mode in the image"


def test_image_venv_holds_the_installed_package(image_env: ImageEnv) -> None:
    code = "import nsm_forwarder.config as c, sys; print(c.__file__); print(sys.version_info[:2])"
    done = subprocess.run(
        [str(image_env.venv / "bin" / "python"), "-c", code],
        cwd="/",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(image_env.venv / "lib")), done.stdout
    tests = subprocess.run(
        [str(image_env.venv / "bin" / "python"), "-c", "import tests"], cwd="/", capture_output=True
    )
    assert tests.returncode != 0, "the tests are not part of the image"


def run_entrypoint(image_env: ImageEnv, tmp_path: Path, use_tini: bool) -> None:
    runtime = image_env.runtime
    command = [*runtime.entrypoint, *runtime.cmd]
    assert command[:4] == ["tini", "-s", "--", "nsm-forwarder"] and command[4:] == ["run"]
    if not use_tini:
        command = command[3:]
    env = image_env.env()
    env.update(
        INSECURE="true",
        NSM_BASEDIR=str(tmp_path),
        FORWARDER_SOCKET=str(tmp_path / "forwarder.sock"),
        FORWARDER_REGISTRAR_SOCKET=str(tmp_path / "registrar.sock"),
        NSM_FORWARDER_SRC_IP="127.0.0.1",
        NSM_FORWARDER_HEALTH_HOST="127.0.0.1",
        NSM_FORWARDER_HEALTH_PORT="0",
        NSM_FORWARDER_CONFIG="",
    )
    assert shutil.which(command[0], path=env["PATH"]), command[0]
    log_path = tmp_path / "forwarder.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd="/",
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        port: list[int] = []

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            if not port:
                found = re.search(r"health probes on http://[^:]+:(\d+)", log_path.read_text())
                if found is None:
                    return False
                port.append(int(found.group(1)))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port[0]}/readiness", timeout=2):
                    return True
            except (urllib.error.URLError, OSError):
                return False

        wait_until(ready, 60, "readiness of the forwarder started from the image's venv")
        assert proc.poll() is None, log_path.read_text()
        check = [str(image_env.venv / "bin" / "python"), str(DOCKER / "healthcheck.py")]
        health_env = dict(env, NSM_FORWARDER_HEALTH_PORT=str(port[0]))
        assert subprocess.run(check, env=health_env, capture_output=True).returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
        text = log_path.read_text()
        assert "received SIGTERM; shutting down" in text
        assert "Tini is not running as PID 1" not in text  # -s: registered as a subreaper
        assert subprocess.run(check, env=health_env, capture_output=True).returncode == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_image_entrypoint_starts_to_readiness_and_stops_on_sigterm(
    image_env: ImageEnv, tmp_path: Path
) -> None:
    """``nsm-forwarder run`` from the image's venv (ENTRYPOINT less tini, which the next test
    adds)."""
    run_entrypoint(image_env, tmp_path, use_tini=False)


def test_image_entrypoint_under_tini_not_pid_1(image_env: ImageEnv, tmp_path: Path) -> None:
    """The whole ENTRYPOINT, tini not being PID 1 (as under hostPID): SIGTERM to tini reaches
    the forwarder, which exits 0, and so does tini."""
    if shutil.which("tini") is None:
        pytest.skip("tini is not installed here (Debian package tini; the image has it)")
    run_entrypoint(image_env, tmp_path, use_tini=True)

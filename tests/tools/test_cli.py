"""The console script: start-up refusals (exit 2, one line), the demo, and the client commands
against a real forwarder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nsm_forwarder.tools import demo
from tests.conftest import Node, needs_root
from tests.helpers import Pod, Pods, local_xcon


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("NSM_", "FORWARDER_"))}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nsm_forwarder.tools.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("env", "args", "words"),
    [
        ({"NSM_FORWARDER_SRC_IP": "10.0.0.1", "NSM_FORWARDER_WORKERS": "0"}, [], "workers"),
        ({}, [], "NSM_FORWARDER_SRC_IP"),
        ({"NSM_FORWARDER_SRC_IP": "not-an-ip"}, [], "src_ip"),
        (
            {"NSM_FORWARDER_SRC_IP": "10.0.0.1", "METRICS_COLLECTOR_REQUEST_PERIOD": "2x"},
            [],
            "METRICS_COLLECTOR_REQUEST_PERIOD",
        ),
        (
            {"NSM_FORWARDER_SRC_IP": "10.0.0.1", "NSM_FORWARDER_WORKERS": "3"},
            ["--workers", "0"],
            "--workers",
        ),
    ],
    ids=[
        "workers-env",
        "missing-src-ip",
        "bad-src-ip",
        "bad-duration",
        "flag-wins",
    ],
)
def test_cli_run_refuses_bad_settings_with_one_line(
    env: dict[str, str], args: list[str], words: str
) -> None:
    done = run_cli("run", *args, env={"NSM_FORWARDER_CONFIG": "", **env})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nsm-forwarder: ") and words in lines[0]


def test_cli_gRPC_process_never_imports_netlink() -> None:
    code = (
        "import sys, nsm_forwarder.actors.supervisor, nsm_forwarder.tools.cli; "
        "print('pyroute2' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_cli_demo_without_root_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo.os, "geteuid", lambda: 1000)
    assert demo.run_demo() == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs root" in err[0]


@needs_root
def test_cli_demo_runs_end_to_end() -> None:
    done = run_cli("demo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0% packet loss" in done.stdout
    assert "demo completed" in done.stdout
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "nsmdemo" not in names


@needs_root
def test_cli_client_commands_against_real_forwarder(
    node: Node, pods: Pods, tmp_path: object
) -> None:
    from google.protobuf import json_format

    a: Pod = pods.make()
    b: Pod = pods.make()
    xcon = local_xcon("cli-1", a, b, src_name="cli0", dst_name="cli0")
    path = os.path.join(node.workdir, "xcon.json")
    with open(path, "w") as f:
        f.write(json_format.MessageToJson(xcon))
    sock = ["--socket", node.forwarder.socket]
    done = run_cli("request", path, *sock)
    assert done.returncode == 0, done.stderr
    assert a.ping("10.30.1.2")
    listed = run_cli("list", "--json", *sock)
    assert listed.returncode == 0, listed.stderr
    assert "cli-1" in json.loads(listed.stdout)
    table = run_cli("list", *sock)
    assert "cli-1" in table.stdout and "cli0" in table.stdout
    closed = run_cli("close", "cli-1", *sock)
    assert closed.returncode == 0, closed.stderr
    assert a.links() == [] and b.links() == []
    again = run_cli("close", "cli-1", *sock)
    assert again.returncode == 1 and "no cross-connect with id cli-1" in again.stderr


@needs_root
def test_cli_run_on_tcp_like_upstream_standalone_test(pods: Pods, tmp_path: object) -> None:
    """FORWARDER_SOCKET_TYPE=tcp (upstream's standalone test, without nsmd)."""
    import socket
    import time

    import grpc as grpc_mod

    from nsm_forwarder.proto import forwarder_pb2_grpc
    from tests.helpers import new_workdir

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = new_workdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NSM_", "FORWARDER_"))}
    env.update(
        FORWARDER_SOCKET_TYPE="tcp",
        FORWARDER_SOCKET=f"127.0.0.1:{port}",
        FORWARDER_REGISTRAR_SOCKET=os.path.join(workdir, "nobody.sock"),
        NSM_BASEDIR=workdir,
        NSM_FORWARDER_SRC_IP="127.0.0.1",
        NSM_FORWARDER_HEALTH_PORT="0",
        INSECURE="true",
    )
    log_path = os.path.join(workdir, "log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nsm_forwarder.tools.cli", "run"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 30
        while "Serve starting..." not in open(log_path).read():
            assert time.monotonic() < deadline and proc.poll() is None, open(log_path).read()
            time.sleep(0.05)
        a, b = pods.make(), pods.make()
        stub = forwarder_pb2_grpc.ForwarderStub(grpc_mod.insecure_channel(f"127.0.0.1:{port}"))
        xcon = local_xcon("tcp-1", a, b)
        stub.Request(xcon, timeout=15)
        assert a.ping("10.30.1.2")
        stub.Close(xcon, timeout=15)
        assert a.links() == []
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)

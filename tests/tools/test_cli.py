"""The console script: start-up refusals (exit 2, one line), the demo, and the client commands
against a real forwarder."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

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
    """FORWARDER_SOCKET_TYPE=tcp (upstream's standalone test, without nsmd); logs as JSON."""
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
            [sys.executable, "-m", "nsm_forwarder.tools.cli", "run", "--log-format", "json"],
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
        records = [json.loads(line) for line in open(log_path).read().splitlines()]
        assert any(r.get("xcon_id") == "tcp-1" for r in records)  # --log-format json
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


# --- flags generated from the settings model, --help, --version, config show --------------------


def test_cli_version() -> None:
    from nsm_forwarder.tools.cli import version

    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"nsm-forwarder {version()}"
    assert version() != "unknown"  # the package is installed (pip install -e)


def test_cli_every_setting_is_a_flag_and_help_names_env_and_default() -> None:
    """The run flags are generated from the model: each setting has its flag, whose help names
    its environment variable and default; so every flag an error message names exists."""
    from nsm_forwarder.config.describe import describe, env_var, flag_name
    from nsm_forwarder.config.settings import Settings
    from nsm_forwarder.tools.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("run", "show"):
        run = sub.choices["run"] if command == "run" else _config_show_parser(sub)
        options = {s: a for a in run._actions for s in a.option_strings}
        for name in Settings.model_fields:
            assert flag_name(name) in options, (command, name)
            assert options[flag_name(name)].dest == name
    help_text = " ".join(run_cli("run", "--help", env={"COLUMNS": "1000"}).stdout.split())
    for name, env, default, _ in describe():
        assert flag_name(name) in help_text
        shown = " ".join((default or '""').split())
        assert f"[env {env}; default {shown}]" in help_text, name
        assert env == env_var(name)


def _config_show_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    config = sub.choices["config"]
    actions = next(a for a in config._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = actions.choices["show"]
    return parser


def test_cli_flags_reach_every_setting() -> None:
    """Each flag sets its setting: a non-default value for every field, given as flags only,
    comes out of load_settings."""
    from nsm_forwarder.config.loader import load_settings
    from nsm_forwarder.config.settings import Settings
    from nsm_forwarder.tools.cli import build_parser
    from nsm_forwarder.tools.settings_flags import setting_flags

    values = {
        "name": "fwd-x",
        "socket": "/tmp/x.sock",
        "socket_type": "tcp",
        "base_dir": "/tmp/nsm",
        "registrar_socket": "/tmp/r.sock",
        "registrar_socket_type": "tcp",
        "metrics_period": "3s",
        "src_ip": "192.0.2.9",
        "liveness_interval": "2s",
        "otlp_endpoint": "http://collector:4317",
        "driver": "vpp",
        "workers": "3",
        "state_dir": "/tmp/st",
        "health_host": "127.0.0.1",
        "health_port": "0",
        "log_level": "debug",
        "log_format": "json",
        "mtu": "1500",
        "vxlan_port": "8472",
        "vpp_api_socket": "/tmp/api.sock",
        "vpp_api_dir": "/tmp/api",
        "vpp_stats_socket": "/tmp/stats.sock",
        "vpp_uplink": "eth9",
        "vpp_connect_timeout": "3s",
        "wireguard_backend": "userspace",
        "reregister_interval": "1s",
        "operation_timeout": "4s",
        "registrar_timeout": "2s",
        "max_restarts": "9",
        "restart_window": "20s",
        "faults": "worker-1:crash:after=3",
        "spiffe_endpoint_socket": "unix:///tmp/agent.sock",
        "tls_cert_file": "/tmp/svid.pem",
        "tls_key_file": "/tmp/svid.key",
        "tls_ca_file": "/tmp/bundle.pem",
        "tls_allowed_ids": "spiffe://example.org",
        "socket_group": "nsm",
        "max_message_size": "65536",
        "max_concurrent_rpcs": "8",
        "max_monitor_subscribers": "4",
        "subscriber_queue": "16",
        "max_cross_connects": "0",
    }
    defaults = Settings(src_ip="10.0.0.1")
    argv = ["run"]
    for name, field in Settings.model_fields.items():
        if field.annotation is bool:
            argv.append(("--no-" if getattr(defaults, name) else "--") + name.replace("_", "-"))
        else:
            assert name in values, f"add a sample value for the new setting {name}"
            argv += ["--" + name.replace("_", "-"), values[name]]
    flags = setting_flags(build_parser().parse_args(argv))
    assert set(flags) == set(Settings.model_fields)
    settings = load_settings(flags, env={}, config_file="")
    for name in Settings.model_fields:
        assert getattr(settings, name) != getattr(defaults, name), name


def test_cli_config_show_names_each_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSECURE")  # set for the client commands by conftest.py
    config = tmp_path / "forwarder.toml"
    config.write_text('workers = 3\nmtu = 1500\nname = "from-file"\n')
    done = run_cli(
        "config",
        "show",
        "--mtu",
        "9000",
        env={
            "NSM_FORWARDER_CONFIG": str(config),
            "NSM_FORWARDER_SRC_IP": "10.0.0.7",
            "FORWARDER_NAME": "from-env",
        },
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in done.stdout.splitlines()[1:]}
    assert rows["mtu"] == ["9000", "flag --mtu"]
    assert rows["name"] == ["from-env", "env FORWARDER_NAME"]
    assert rows["src_ip"] == ["10.0.0.7", "env NSM_FORWARDER_SRC_IP"]
    assert rows["workers"] == ["3", f"file {config}"]
    assert rows["driver"] == ["kernel", "shipped file"]
    assert rows["socket_type"] == ["unix", "default"]
    state = "/var/lib/networkservicemesh/forwarder-state/from-env"
    assert rows["state_dir"] == [state, "default"]

    as_json = run_cli("config", "show", "--json", env={"NSM_FORWARDER_SRC_IP": "10.0.0.7"})
    table = json.loads(as_json.stdout)
    assert table["health_port"] == {"value": "5555", "source": "shipped file"}
    assert table["insecure"] == {"value": "false", "source": "default"}


def test_cli_config_show_invalid_settings_exit_2_after_the_table() -> None:
    done = run_cli("config", "show", env={"NSM_FORWARDER_CONFIG": "", "NSM_FORWARDER_MTU": "1"})
    assert done.returncode == 2
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in done.stdout.splitlines()[1:]}
    assert rows["mtu"] == ["1", "env NSM_FORWARDER_MTU"]
    assert rows["src_ip"] == ['""', "unset (required)"]
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("nsm-forwarder: ")


def test_cli_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from nsm_forwarder.config.loader import explain_settings
    from nsm_forwarder.config.settings import Settings

    field = Settings.model_fields["vpp_uplink"]
    monkeypatch.setattr(field, "json_schema_extra", {"secret": True})
    rows, failure = explain_settings(
        env={"NSM_FORWARDER_SRC_IP": "10.0.0.1", "NSM_FORWARDER_VPP_UPLINK": "hunter2"},
        config_file="",
    )
    assert failure is None
    shown = {r.name: r for r in rows}["vpp_uplink"]
    assert (shown.value, shown.source) == ("**********", "env NSM_FORWARDER_VPP_UPLINK")
    rows, failure = explain_settings(
        env={"NSM_FORWARDER_VPP_UPLINK": "hunter2"}, config_file=""
    )  # invalid (no src_ip): the raw values are shown, still masked
    assert failure is not None
    assert {r.name: r.value for r in rows}["vpp_uplink"] == "**********"


def test_cli_output_cut_short_by_its_reader_is_not_an_error() -> None:
    """``nsm-forwarder config show | head -1``: the reader is gone; exit 0, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NSM_", "FORWARDER_"))}
    env["NSM_FORWARDER_SRC_IP"] = "10.0.0.7"
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write of the child meets a closed pipe
    try:
        done = subprocess.run(
            [sys.executable, "-m", "nsm_forwarder.tools.cli", "config", "show"],
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr

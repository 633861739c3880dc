"""Client commands against an in-test fake forwarder on a unix socket (no root needed)."""

from __future__ import annotations

import _thread
import argparse
import io
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format

from nsm_forwarder.proto import (
    connection_pb2,
    connectioncontext_pb2,
    crossconnect_pb2,
    crossconnect_pb2_grpc,
    forwarder_pb2_grpc,
)
from nsm_forwarder.tools.client import add_client_commands, resolve_target
from nsm_forwarder.tools.formats import format_event, format_table, parse_xcon, summarize

EXAMPLE = Path(__file__).resolve().parents[2] / "docker" / "examples" / "local-xcon.json"


def make_xcon(xid: str, dst_state: Any = connection_pb2.UP) -> crossconnect_pb2.CrossConnect:
    def end(side: str, ip_src: str, ip_dst: str, inode: str) -> connection_pb2.Connection:
        return connection_pb2.Connection(
            id=f"{xid}-{side}",
            network_service="some-network-service",
            mechanism=connection_pb2.Mechanism(
                type="KERNEL_INTERFACE",
                parameters={"name": f"if{xid}_{side}", "netnsInode": inode},
            ),
            context=connectioncontext_pb2.ConnectionContext(
                ip_context=connectioncontext_pb2.IPContext(src_ip_addr=ip_src, dst_ip_addr=ip_dst)
            ),
            state=dst_state if side == "dst" else connection_pb2.UP,
        )

    return crossconnect_pb2.CrossConnect(
        id=xid,
        payload="IP",
        source=end("src", "10.30.1.1/30", "10.30.1.2/30", "4026531001"),
        destination=end("dst", "10.30.1.1/30", "10.30.1.2/30", "4026531002"),
    )


# ---------------------------------------------------------------------------------------------
# Fake forwarder


class FakeForwarder(
    forwarder_pb2_grpc.ForwarderServicer, crossconnect_pb2_grpc.MonitorCrossConnectServicer
):
    """Echoes Request (payload "FAIL" -> INVALID_ARGUMENT), records Close, streams set events."""

    def __init__(self) -> None:
        self.xcons: dict[str, crossconnect_pb2.CrossConnect] = {"0": make_xcon("0")}
        self.events: list[crossconnect_pb2.CrossConnectEvent] = []
        self.send_initial = True
        self.hold_open = True
        self.interrupt_after_initial = False
        self.closed: list[crossconnect_pb2.CrossConnect] = []
        self.requested: list[crossconnect_pb2.CrossConnect] = []

    def Request(
        self, request: crossconnect_pb2.CrossConnect, context: grpc.ServicerContext
    ) -> crossconnect_pb2.CrossConnect:
        if request.payload == "FAIL":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payload is\nnot acceptable")
        self.requested.append(request)
        return request

    def Close(
        self, request: crossconnect_pb2.CrossConnect, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.closed.append(request)
        return empty_pb2.Empty()

    def MonitorCrossConnects(
        self, request: empty_pb2.Empty, context: grpc.ServicerContext
    ) -> Iterator[crossconnect_pb2.CrossConnectEvent]:
        done = threading.Event()
        context.add_callback(done.set)
        if self.send_initial:
            yield crossconnect_pb2.CrossConnectEvent(
                type=crossconnect_pb2.INITIAL_STATE_TRANSFER, cross_connects=self.xcons
            )
            yield from self.events
            if self.interrupt_after_initial:
                time.sleep(0.2)  # let the client block in the stream, then press "Ctrl-C"
                _thread.interrupt_main()
        if self.hold_open or not self.send_initial:
            done.wait(timeout=10)


@dataclass
class Server:
    fake: FakeForwarder
    socket: str


@pytest.fixture
def server() -> Iterator[Server]:
    tmp = tempfile.mkdtemp(prefix="nsmc", dir="/tmp")  # unix socket paths must stay < 108 bytes
    path = f"{tmp}/fwd.sock"
    fake = FakeForwarder()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    forwarder_pb2_grpc.add_ForwarderServicer_to_server(fake, grpc_server)
    crossconnect_pb2_grpc.add_MonitorCrossConnectServicer_to_server(fake, grpc_server)
    grpc_server.add_insecure_port(f"unix:{path}")
    grpc_server.start()
    try:
        yield Server(fake, path)
    finally:
        grpc_server.stop(grace=None).wait()
        shutil.rmtree(tmp, ignore_errors=True)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="nsm-forwarder")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


# ---------------------------------------------------------------------------------------------
# Pure helpers


def test_format_table_lists_ends_and_states() -> None:
    out = format_table({"1": make_xcon("1", connection_pb2.DOWN), "0": make_xcon("0")})
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "PAYLOAD", "SOURCE", "DESTINATION", "STATE"]
    assert lines[1].split() == [
        "0", "IP",
        "KERNEL_INTERFACE", "if0_src@4026531001", "10.30.1.1/30",
        "KERNEL_INTERFACE", "if0_dst@4026531002", "10.30.1.2/30",
        "UP/UP",
    ]  # fmt: skip
    assert lines[2].split()[0] == "1" and lines[2].endswith("UP/DOWN")
    # Columns line up: every row's DESTINATION starts where the header's does.
    col = lines[0].index("DESTINATION")
    assert all(line[col:].startswith("KERNEL_INTERFACE") for line in lines[1:])


def test_format_table_empty() -> None:
    assert format_table({}) == "no cross-connects"


def test_summarize_tunnel_end_and_missing_end() -> None:
    xcon = crossconnect_pb2.CrossConnect(
        id="7",
        source=connection_pb2.Connection(
            mechanism=connection_pb2.Mechanism(
                type="VXLAN", parameters={"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2"}
            )
        ),
    )
    assert summarize(xcon) == {
        "id": "7",
        "payload": "-",
        "source": "VXLAN 192.0.2.1->192.0.2.2 -",
        "destination": "-",
        "state": "UP/-",
    }


def test_format_event_reports_down_end_and_metrics() -> None:
    event = crossconnect_pb2.CrossConnectEvent(
        type=crossconnect_pb2.UPDATE,
        cross_connects={"5": make_xcon("5", connection_pb2.DOWN)},
        metrics={"SRC-5": crossconnect_pb2.Metrics(metrics={"rx_bytes": "1"})},
    )
    at = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert format_event(event, at) == (
        "2024-01-02T03:04:05.678+00:00 UPDATE 5 (5 destination DOWN) metrics=SRC-5"
    )


def test_resolve_target() -> None:
    assert resolve_target("/a/b.sock", None, {}) == "unix:///a/b.sock"
    assert resolve_target(None, "localhost:9500", {"FORWARDER_SOCKET": "/x"}) == "localhost:9500"
    assert resolve_target(None, None, {}) == (
        "unix:///var/lib/networkservicemesh/nsm-vppagent.forwarder.sock"
    )
    assert resolve_target(None, None, {"FORWARDER_SOCKET": "/run/f.sock"}) == "unix:///run/f.sock"
    tcp_env = {"FORWARDER_SOCKET_TYPE": "tcp", "FORWARDER_SOCKET": "0.0.0.0:9500"}
    assert resolve_target(None, None, tcp_env) == "127.0.0.1:9500"


def test_parse_xcon_rejects_non_object() -> None:
    with pytest.raises(Exception, match="expected a JSON object"):
        parse_xcon("[1]", "x.json")


def test_example_request_parses_as_local_kernel_xcon() -> None:
    xcon = parse_xcon(EXAMPLE.read_text(), str(EXAMPLE))
    assert (xcon.id, xcon.payload) == ("0", "IP")
    for conn, name in ((xcon.source, "iface_src"), (xcon.destination, "iface_dst")):
        assert conn.network_service
        assert conn.mechanism.type == "KERNEL_INTERFACE"
        assert conn.mechanism.parameters["name"] == name
        assert conn.mechanism.parameters["netnsInode"] == "REPLACE_WITH_INODE"
        assert conn.context.ip_context.src_ip_addr == "10.30.1.1/30"
        assert conn.context.ip_context.dst_ip_addr == "10.30.1.2/30"


def test_cli_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["list", "--tcp", "nohost"],
        ["list", "--timeout", "0"],
        ["list", "--socket", "/a", "--tcp", "h:1"],
        ["watch", "--count", "-1"],
    ):
        with pytest.raises(SystemExit) as exc:
            run_cli(*argv)
        assert exc.value.code == 2
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------
# Commands against the fake forwarder


def test_list_prints_table(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("list", "--socket", server.socket) == 0
    out = capsys.readouterr().out
    assert out == format_table({"0": make_xcon("0")}) + "\n"


def test_list_empty(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.fake.xcons = {}
    assert run_cli("list", "--socket", server.socket) == 0
    assert capsys.readouterr().out == "no cross-connects\n"


def test_list_json(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.fake.xcons["1"] = make_xcon("1")
    assert run_cli("list", "--json", "--socket", server.socket) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out) == ["0", "1"]
    assert json_format.ParseDict(out["1"], crossconnect_pb2.CrossConnect()) == make_xcon("1")


def test_list_without_initial_state_times_out(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.fake.send_initial = False
    start = time.monotonic()
    assert run_cli("list", "--timeout", "0.3", "--socket", server.socket) == 1
    assert time.monotonic() - start < 5
    assert capsys.readouterr().err.startswith("nsm-forwarder: list failed: DEADLINE_EXCEEDED: ")


def test_unreachable_socket_fails_fast(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["list"], ["watch"], ["close", "0"]):
        start = time.monotonic()
        assert run_cli(*command, "--socket", "/tmp/nsmc-absent/none.sock") == 1
        assert time.monotonic() - start < 5
        err = capsys.readouterr().err
        assert err.startswith(f"nsm-forwarder: {command[0]} failed: UNAVAILABLE: ")
        assert err.count("\n") == 1


def test_request_from_file(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.json"
    path.write_text(json_format.MessageToJson(make_xcon("3")))  # camelCase names
    assert run_cli("request", "--socket", server.socket, str(path)) == 0
    assert server.fake.requested == [make_xcon("3")]
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["id:", "3"]
    assert "source:      KERNEL_INTERFACE if3_src@4026531001 10.30.1.1/30" in out
    assert out.splitlines()[-1].split() == ["state:", "UP/UP"]


def test_request_from_stdin_json(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLE.read_text()))
    assert run_cli("request", "--json", "--socket", server.socket, "-") == 0
    reply = json_format.ParseDict(
        json.loads(capsys.readouterr().out), crossconnect_pb2.CrossConnect()
    )
    assert reply == parse_xcon(EXAMPLE.read_text(), "example")
    assert server.fake.requested == [reply]


def test_request_error_status_is_one_line(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"id": "9", "payload": "FAIL"}'))
    assert run_cli("request", "--socket", server.socket, "-") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "nsm-forwarder: request failed: INVALID_ARGUMENT: payload is not acceptable\n"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "invalid JSON"),
        ('{"idd": "1"}', 'no field named "idd"'),
        ('{"source": {"state": "SIDEWAYS"}}', "SIDEWAYS"),
    ],
)
def test_request_bad_file_exits_2(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, reason: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert run_cli("request", "--socket", server.socket, str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nsm-forwarder: request: cannot parse {path}")
    assert reason in err and err.count("\n") == 1
    assert server.fake.requested == []


def test_request_missing_file_exits_2(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("request", "--socket", server.socket, "/nonexistent/x.json") == 2
    assert capsys.readouterr().err.startswith("nsm-forwarder: request: cannot read /nonexistent")


def test_close_known_id(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("close", "--socket", server.socket, "0") == 0
    assert server.fake.closed == [make_xcon("0")]
    assert capsys.readouterr().out == "closed 0\n"
    assert run_cli("close", "--json", "--socket", server.socket, "0") == 0
    assert json.loads(capsys.readouterr().out) == {"closed": "0"}


def test_close_unknown_id(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("close", "--socket", server.socket, "nope") == 1
    assert capsys.readouterr().err == "no cross-connect with id nope\n"
    assert server.fake.closed == []


def test_watch_count_prints_initial_state_then_events(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.fake.events = [
        crossconnect_pb2.CrossConnectEvent(
            type=crossconnect_pb2.UPDATE, cross_connects={"0": make_xcon("0", connection_pb2.DOWN)}
        ),
        crossconnect_pb2.CrossConnectEvent(
            type=crossconnect_pb2.DELETE, cross_connects={"0": make_xcon("0")}
        ),
    ]
    assert run_cli("watch", "--count", "2", "--socket", server.socket) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == format_table({"0": make_xcon("0")}).splitlines()
    assert lines[2].split()[1:] == ["UPDATE", "0", "(0", "destination", "DOWN)"]
    assert lines[3].split()[1:] == ["DELETE", "0"]
    datetime.fromisoformat(lines[2].split()[0])
    assert len(lines) == 4


def test_watch_json_one_object_per_line(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.fake.events = [
        crossconnect_pb2.CrossConnectEvent(
            type=crossconnect_pb2.UPDATE,
            cross_connects={"0": make_xcon("0")},
            metrics={"SRC-0": crossconnect_pb2.Metrics(metrics={"rx_bytes": "10"})},
        )
    ]
    assert run_cli("watch", "--json", "--count", "1", "--socket", server.socket) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["type"] == "INITIAL_STATE_TRANSFER" and first["metrics"] == {}
    assert sorted(first["cross_connects"]) == ["0"]
    assert second["type"] == "UPDATE"
    assert second["metrics"] == {"SRC-0": {"rx_bytes": "10"}}
    assert json_format.ParseDict(
        second["cross_connects"]["0"], crossconnect_pb2.CrossConnect()
    ) == make_xcon("0")


def test_watch_stream_end_exits_1(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.fake.hold_open = False
    assert run_cli("watch", "--socket", server.socket) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("ID")
    assert captured.err == (
        "nsm-forwarder: watch failed: OK: the forwarder ended the monitor stream\n"
    )


def test_watch_without_initial_state_times_out(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.fake.send_initial = False
    start = time.monotonic()
    assert run_cli("watch", "--timeout", "0.3", "--socket", server.socket) == 1
    assert time.monotonic() - start < 5
    assert capsys.readouterr().err == (
        "nsm-forwarder: watch failed: DEADLINE_EXCEEDED: no initial state within 0.3s\n"
    )


def test_watch_ctrl_c_exits_0(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.fake.interrupt_after_initial = True
    assert run_cli("watch", "--socket", server.socket) == 0
    assert capsys.readouterr().out == format_table({"0": make_xcon("0")}) + "\n"

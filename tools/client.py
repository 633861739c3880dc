"""Operator client commands of the ``nsm-forwarder`` console script: list, watch, request, close.

Scope:    talks to a running forwarder over its public gRPC API only (``forwarder.Forwarder`` and
          ``crossconnect.MonitorCrossConnect``), on a unix socket or TCP: plaintext when
          INSECURE=true, else mTLS as the forwarder's environment says (``client_tls.py``).
Entry:    ``add_client_commands(subparsers)`` adds the four subcommands; each sets
          ``func(args) -> int`` (the process exit code).
Exit codes: 0 success; 1 any gRPC failure (one line ``nsm-forwarder: <command> failed:
          <STATUS_CODE>: <details>`` on stderr), an unknown id for ``close``, or the end of a
          ``watch`` stream; 2 an unreadable or unparsable request file (and argparse usage errors);
          130 Ctrl-C, except in ``watch``, where Ctrl-C is the normal way out (0).
Deadlines: every unary call and ``list``/``close``'s monitor stream carry ``--timeout``; ``watch``
          bounds only the wait for the initial state, since the stream itself is open-ended. An
          unreachable socket fails at once with UNAVAILABLE (no wait-for-ready).
Output:   what is printed and read is in ``formats.py`` (pure); ``resolve_target`` is pure too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime

import grpc
from google.protobuf import empty_pb2

from nsm_forwarder.proto import crossconnect_pb2, crossconnect_pb2_grpc, forwarder_pb2_grpc
from nsm_forwarder.proto.crossconnect_pb2 import CrossConnectEvent
from nsm_forwarder.tools.client_tls import NoTransport, client_channel
from nsm_forwarder.tools.formats import (
    BadRequestFile,
    event_to_dict,
    format_event,
    format_summary,
    format_table,
    one_line,
    parse_xcon,
    xcon_to_dict,
)

PROG = "nsm-forwarder"

# DEFAULT_SOCKET - upstream's FORWARDER_SOCKET default (spec §4.1), shared by both forwarders.
DEFAULT_SOCKET = "/var/lib/networkservicemesh/nsm-vppagent.forwarder.sock"
# DEFAULT_TIMEOUT - seconds allowed for each call (and for the initial state of a watch).
DEFAULT_TIMEOUT = 10.0


class CommandFailed(Exception):
    """CommandFailed - a command could not complete; ``code`` is a gRPC status code name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


# ---------------------------------------------------------------------------------------------
# gRPC plumbing


def resolve_target(socket: str | None, tcp: str | None, environ: Mapping[str, str]) -> str:
    """Return the gRPC target for ``--socket``/``--tcp``, else from the forwarder's own env.

    With neither flag, ``FORWARDER_SOCKET_TYPE=tcp`` makes ``FORWARDER_SOCKET`` a HOST:PORT (a
    wildcard or empty host is dialled on loopback); otherwise ``FORWARDER_SOCKET`` (or the upstream
    default) is a unix socket path.
    """
    if tcp is not None:
        return tcp
    if socket is None:
        env_socket = environ.get("FORWARDER_SOCKET") or DEFAULT_SOCKET
        if environ.get("FORWARDER_SOCKET_TYPE", "unix") == "tcp":
            host, _, port = env_socket.rpartition(":")
            if host in ("", "0.0.0.0", "[::]"):
                host = "127.0.0.1"
            return f"{host}:{port}"
        socket = env_socket
    return "unix://" + os.path.abspath(socket)


@contextmanager
def _channel(args: argparse.Namespace) -> Iterator[grpc.Channel]:
    """Plaintext with INSECURE=true, else mTLS as the forwarder's environment says (client_tls)."""
    target = resolve_target(args.socket, args.tcp, os.environ)
    try:
        with client_channel(target, os.environ, args.timeout) as channel:
            yield channel
    except NoTransport as err:
        raise CommandFailed("UNAVAILABLE", str(err)) from None


def _initial_state(channel: grpc.Channel, timeout: float) -> CrossConnectEvent:
    """Subscribe, take the first event (the INITIAL_STATE_TRANSFER) and unsubscribe."""
    stub = crossconnect_pb2_grpc.MonitorCrossConnectStub(channel)
    call = stub.MonitorCrossConnects(empty_pb2.Empty(), timeout=timeout)
    try:
        return _expect_initial(next(call, None))
    finally:
        call.cancel()


def _expect_initial(event: CrossConnectEvent | None) -> CrossConnectEvent:
    if event is None:
        raise CommandFailed("UNAVAILABLE", "monitor stream ended before the initial state")
    if event.type != crossconnect_pb2.INITIAL_STATE_TRANSFER:
        kind = crossconnect_pb2.CrossConnectEventType.Name(event.type)
        raise CommandFailed(
            "INTERNAL", f"first monitor event is {kind}, not INITIAL_STATE_TRANSFER"
        )
    return event


def _print_json(value: object, *, indent: int | None = 2) -> None:
    print(json.dumps(value, indent=indent, sort_keys=True), flush=True)


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_list(args: argparse.Namespace) -> int:
    """``list``: print the forwarder's cross-connects from its initial state transfer."""
    with _channel(args) as channel:
        event = _initial_state(channel, args.timeout)
    if args.json:
        _print_json({key: xcon_to_dict(x) for key, x in event.cross_connects.items()})
    else:
        print(format_table(event.cross_connects))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """``watch``: print the initial state, then one line per event until Ctrl-C or ``--count``."""
    with _channel(args) as channel:
        stub = crossconnect_pb2_grpc.MonitorCrossConnectStub(channel)
        call = stub.MonitorCrossConnects(empty_pb2.Empty())
        deadline = _FirstEventDeadline(call, args.timeout)
        seen = 0
        try:
            try:
                first = next(call, None)
            except grpc.RpcError:
                if deadline.expired:
                    raise CommandFailed(
                        "DEADLINE_EXCEEDED", f"no initial state within {args.timeout:g}s"
                    ) from None
                raise
            finally:
                deadline.cancel()
            _show_initial(_expect_initial(first), args.json)
            while args.count is None or seen < args.count:
                event = next(call, None)
                if event is None:
                    raise CommandFailed("OK", "the forwarder ended the monitor stream")
                seen += 1
                if args.json:
                    _print_json(event_to_dict(event), indent=None)
                else:
                    print(format_event(event, datetime.now().astimezone()), flush=True)
        except KeyboardInterrupt:
            return 0
        except BrokenPipeError:
            # The reader went away (`watch | head`): stop quietly, and keep the interpreter's
            # final flush of stdout from raising again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        finally:
            call.cancel()
    return 0


def _show_initial(event: CrossConnectEvent, as_json: bool) -> None:
    if as_json:
        _print_json(event_to_dict(event), indent=None)
    else:
        print(format_table(event.cross_connects), flush=True)


class _FirstEventDeadline:
    """Cancels ``call`` unless ``cancel()`` comes within ``timeout`` seconds; then ``expired``."""

    def __init__(self, call: grpc.Future, timeout: float) -> None:
        self._call = call
        self._lock = threading.Lock()
        self._done = False
        self.expired = False
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = self.expired = True
        self._call.cancel()

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def cmd_request(args: argparse.Namespace) -> int:
    """``request FILE``: send the CrossConnect in FILE (``-`` = stdin) and print the reply."""
    xcon = parse_xcon(*_read_request_file(args.file))
    with _channel(args) as channel:
        reply = forwarder_pb2_grpc.ForwarderStub(channel).Request(xcon, timeout=args.timeout)
    if args.json:
        _print_json(xcon_to_dict(reply))
    else:
        print(format_summary(reply))
    return 0


def _read_request_file(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except (OSError, UnicodeDecodeError) as err:
        raise BadRequestFile(f"cannot read {path}: {err}") from err


def cmd_close(args: argparse.Namespace) -> int:
    """``close ID``: Close the cross-connect the forwarder reports under ID."""
    with _channel(args) as channel:
        xcons = _initial_state(channel, args.timeout).cross_connects
        if args.id not in xcons:
            print(f"no cross-connect with id {args.id}", file=sys.stderr)
            return 1
        forwarder_pb2_grpc.ForwarderStub(channel).Close(xcons[args.id], timeout=args.timeout)
    if args.json:
        _print_json({"closed": args.id})
    else:
        print(f"closed {args.id}")
    return 0


def _guarded(name: str, body: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Wrap a command so every failure becomes one stderr line and an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except grpc.RpcError as err:
            code, details = err.code(), err.details()  # a sync-API RpcError is also a grpc.Call
            _fail(name, CommandFailed(code.name, details or code.value[1]))
            return 1
        except CommandFailed as err:
            _fail(name, err)
            return 1
        except BadRequestFile as err:
            print(f"{PROG}: {name}: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130

    run.__doc__ = body.__doc__
    return run


def _fail(name: str, err: CommandFailed) -> None:
    print(f"{PROG}: {name} failed: {err.code}: {one_line(err.details)}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# argparse wiring


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def _non_negative_int(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}")
    return int(value)


def _common_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    target = common.add_mutually_exclusive_group()
    target.add_argument(
        "--socket",
        metavar="PATH",
        help="forwarder unix socket (default: $FORWARDER_SOCKET, honouring "
        f"FORWARDER_SOCKET_TYPE=tcp, else {DEFAULT_SOCKET})",
    )
    target.add_argument(
        "--tcp", metavar="HOST:PORT", type=_host_port, help="dial the forwarder over TCP instead"
    )
    common.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"deadline for each call (default: {DEFAULT_TIMEOUT:g})",
    )
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    return common


def add_client_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``list``, ``watch``, ``request`` and ``close``; each sets ``func(args) -> int``."""
    common = _common_flags()

    p = subparsers.add_parser(
        "list",
        parents=[common],
        help="list the forwarder's cross-connects",
        description="Print the cross-connects of the forwarder's initial state transfer. With "
        "--json: one object mapping id to the cross-connect (protobuf JSON mapping).",
    )
    p.set_defaults(func=_guarded("list", cmd_list))

    p = subparsers.add_parser(
        "watch",
        parents=[common],
        help="follow cross-connect events",
        description="Print the initial state, then one line per event, until Ctrl-C. With "
        '--json: one object per line, {"type", "cross_connects", "metrics"}. Exits 1 if the '
        "forwarder ends the stream.",
    )
    p.add_argument(
        "--count",
        metavar="N",
        type=_non_negative_int,
        help="exit 0 after N events following the initial state",
    )
    p.set_defaults(func=_guarded("watch", cmd_watch))

    p = subparsers.add_parser(
        "request",
        parents=[common],
        help="request (create or update) a cross-connect",
        description="Send the CrossConnect in FILE (protobuf JSON mapping) with Forwarder.Request "
        "and print what the forwarder returns.",
    )
    p.add_argument("file", metavar="FILE", help='CrossConnect JSON file, or "-" for stdin')
    p.set_defaults(func=_guarded("request", cmd_request))

    p = subparsers.add_parser(
        "close",
        parents=[common],
        help="close a cross-connect by id",
        description="Look ID up in the forwarder's initial state transfer and send that "
        "cross-connect to Forwarder.Close.",
    )
    p.add_argument("id", metavar="ID", help="cross-connect id")
    p.set_defaults(func=_guarded("close", cmd_close))

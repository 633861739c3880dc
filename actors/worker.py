"""DriverHost: the worker process that runs the data-plane driver.

Accepts:  WorkerCall{corr, method, args} over its socket (streamed msgpack), methods
          ``init(config)``, ``apply(plan)``, ``remove(applied)``, ``remove_many(records)``,
          ``observe()``, ``sweep(found)``,
          ``stats(entries)``, ``epoch()``, ``ping()``.
Sends:    WorkerReply{corr, ok, result | error} for every call, in the order received, except
          for a call the driver answers later (a Future: ``remove_many``'s group delete, which
          is a kernel wait), whose reply goes out when it is done.
Guarantees: one call at a time on the main thread (the socket buffer is the mailbox); a
          deferred call's last step runs on a thread of the driver's meanwhile; every netlink
          call of the forwarder runs in a process like this one, never in the gRPC process.
Faults:   ``worker-N`` / ``worker`` faults of the plan act on every call but init, ping, epoch,
          ``driver`` faults on apply / remove / sweep: crash = exit at once, hang = stop
          answering (the pool kills us after the operation timeout), delay, error.
Failure:  a driver error becomes an error reply (code, message, retriable); any other exception
          becomes INTERNAL and is logged with its traceback; the process keeps serving. It exits
          on EOF (the parent went away) and dies with the parent (PR_SET_PDEATHSIG).

Started by :mod:`nsm_forwarder.actors.workers` as
``python -m nsm_forwarder.actors.worker --fd N --driver kernel --index I``: forked by the zygote
(:mod:`nsm_forwarder.actors.zygote`), which imports this module and calls :func:`preload` before
it forks and then :func:`main` in the child, or spawned as that command when there is no zygote.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from concurrent.futures import Future
from typing import Any

from nsm_forwarder.actors import tracing
from nsm_forwarder.actors.faults import CRASH, HANG, Injector, hang_forever
from nsm_forwarder.actors.logs import XCON_ID, setup_logging
from nsm_forwarder.actors.messages import Decoder, Message, WorkerCall, WorkerReply, pack
from nsm_forwarder.config.faults import parse_plan
from nsm_forwarder.drivers.base import Driver
from nsm_forwarder.drivers.errors import DriverError, ForwarderError
from nsm_forwarder.drivers.registry import DRIVERS, load_driver

log = logging.getLogger("nsm_forwarder.worker")

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def die_with_parent(name: str = "") -> None:
    """Ask the kernel to SIGKILL us when the parent dies (backstop against orphans); with a
    ``name``, also give this process that name (what ``top`` and ``ps -o comm`` show: a forked
    worker's command line is its zygote's)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if name:
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def dispatch(driver: Driver, call: WorkerCall) -> WorkerReply | Future[WorkerReply]:
    """Run one call against the driver and build its reply, or the future of the reply of a
    call the driver finishes later (never raises)."""
    try:
        result: Any
        if call.method == "init":
            result = driver.init(call.args[0])
        elif call.method == "apply":
            result = driver.apply(call.args[0])
        elif call.method == "remove":
            driver.remove(call.args[0])
            result = None
        elif call.method == "remove_many":
            result = driver.remove_many(call.args[0])
        elif call.method == "observe":
            result = driver.observe()
        elif call.method == "sweep":
            result = driver.sweep(call.args[0])
        elif call.method == "stats":
            result = driver.stats(call.args[0])
        elif call.method == "epoch":
            result = driver.epoch()
        elif call.method == "ping":
            result = "pong"
        else:
            raise DriverError(f"unknown worker method {call.method!r}")
    except Exception as exc:
        return _failed(call, exc)
    if isinstance(result, Future):
        reply: Future[WorkerReply] = Future()
        result.add_done_callback(lambda done: reply.set_result(_finished(call, done)))
        return reply
    return WorkerReply(corr=call.corr, ok=True, result=result)


def _finished(call: WorkerCall, done: Future[Any]) -> WorkerReply:
    """The reply of a call the driver finished later."""
    exc = done.exception()
    if exc is not None:
        return _failed(call, exc)
    return WorkerReply(corr=call.corr, ok=True, result=done.result())


def _failed(call: WorkerCall, exc: BaseException) -> WorkerReply:
    if isinstance(exc, ForwarderError):
        log.debug("call %s %s failed: %s", call.corr, call.method, exc)
        return WorkerReply(corr=call.corr, ok=False, error=exc.to_wire())
    log.error("call %s %s crashed", call.corr, call.method, exc_info=exc)
    err = DriverError(f"{call.method}: {type(exc).__name__}: {exc}")
    return WorkerReply(corr=call.corr, ok=False, error=err.to_wire())


#: Calls that change the data plane (what ``driver`` faults act on).
DATA_PLANE = ("apply", "remove", "remove_many", "sweep")


class Faults:
    """This worker's injectors: ``worker-N`` (every call but init/ping/epoch) and ``driver``."""

    def __init__(self, index: int, plan: str) -> None:
        faults = parse_plan(plan)
        self.worker = Injector(f"worker-{index}", faults)
        self.driver = Injector("driver", faults)

    def before(self, call: WorkerCall) -> None:
        """Carry out what the plan says for this call: exit, hang, sleep or raise."""
        if call.method in ("init", "ping", "epoch"):
            return
        actions = [self.worker.check(call.method)]
        if call.method in DATA_PLANE:
            actions.append(self.driver.check(call.method))
        if CRASH in actions:
            log.warning("crashing (injected) before %s", call.method)
            os._exit(70)
        if HANG in actions:
            log.warning("hanging (injected) in %s", call.method)
            hang_forever()


def serve(sock: socket.socket, driver: Driver, faults: Faults, index: int = 0) -> None:
    decoder = Decoder()
    sending = threading.Lock()  # deferred replies are sent from the driver's threads

    def send(reply: WorkerReply) -> None:
        with sending:
            try:
                sock.sendall(pack(reply))
            except OSError:  # the parent went away; the main thread sees EOF
                pass

    while True:
        data = sock.recv(65536)
        if not data:
            return
        for msg in decoder.feed(data):
            reply = _reply_to(driver, faults, msg, index)
            if isinstance(reply, Future):
                reply.add_done_callback(lambda done: send(done.result()))
            else:
                with sending:
                    sock.sendall(pack(reply))


def _reply_to(
    driver: Driver, faults: Faults, msg: Message, index: int = 0
) -> WorkerReply | Future[WorkerReply]:
    if not isinstance(msg, WorkerCall):
        err = DriverError(f"worker expected a WorkerCall, got {msg.TAG}")
        return WorkerReply(corr=-1, ok=False, error=err.to_wire())
    if msg.meta is None:
        return _run(driver, faults, msg)
    token = XCON_ID.set(msg.meta.get("xcon_id"))
    try:
        if tracing.enabled and "traceparent" in msg.meta:
            with tracing.worker_span(msg.meta, msg.method, index) as span:
                reply = _run(driver, faults, msg)
                if isinstance(reply, WorkerReply) and not reply.ok:
                    span.set_status(tracing.error_status((reply.error or {}).get("message", "")))
                return reply
        return _run(driver, faults, msg)
    finally:
        XCON_ID.reset(token)


def _run(driver: Driver, faults: Faults, msg: WorkerCall) -> WorkerReply | Future[WorkerReply]:
    try:
        faults.before(msg)
    except ForwarderError as exc:
        return WorkerReply(corr=msg.corr, ok=False, error=exc.to_wire())
    return dispatch(driver, msg)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsm-forwarder-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--driver", default="kernel")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--faults", default="", help="fault plan (see config/faults.py)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--trace-endpoint", default="", help="OTLP endpoint; tracing off if empty")
    return parser


def preload(argv: list[str]) -> None:
    """Import the driver module ``main(argv)`` will load, and what its ``preload()`` names,
    without instantiating the driver (the zygote calls this before it forks a worker, so the
    imports are shared); an unknown driver or bad arguments are left for ``main`` to report."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--driver", default="kernel")
    args, _ = parser.parse_known_args(argv)
    target = DRIVERS.get(args.driver)
    if target is not None:
        module = importlib.import_module(target.partition(":")[0])
        hook = getattr(module, "preload", None)  # what the driver imports on first use
        if callable(hook):
            hook()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    die_with_parent(f"nsm-worker-{args.index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    setup_logging(args.log_level, args.log_format, process=f"worker-{args.index}")
    logging.getLogger("pyroute2").setLevel(max(logging.INFO, logging.getLogger().level))
    if args.trace_endpoint:
        tracing.configure(args.trace_endpoint, attributes={"nsm.worker.index": args.index})
    sock = socket.socket(fileno=args.fd)
    driver = load_driver(args.driver)
    try:
        serve(sock, driver, Faults(args.index, args.faults), args.index)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        sock.close()
        tracing.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

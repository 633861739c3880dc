"""The zygote process: imports the worker once, then forks a worker on each request.

Started by :mod:`nsm_forwarder.actors.zygote` (the parent side, which says why) as
``python -m nsm_forwarder.actors.zygote_process --fd N --parent PID``.

Accepts:  on the control socket N (AF_UNIX SOCK_SEQPACKET, one msgpack map a message):
          ``spawn {argv, targets}`` with ``len(targets)`` fds (SCM_RIGHTS); ``argv`` is
          ``[python, "-m", module, *args]`` with module in :data:`RUNNABLE`.
Sends:    ``ready {pid}`` once its imports are done (or ``error {message}``, then it exits);
          for each spawn ``spawned {pid, argv}`` with a pidfd of the child (SCM_RIGHTS) or
          ``failed {message, fatal}``; ``exit {pid, code}`` when it reaps a child (``code`` as
          ``subprocess.Popen.returncode``: the exit status, or -signal).
Guarantees: single-threaded: it checks before every fork that it has one thread; garbage
          collection is off and everything imported is frozen (``gc.freeze``) before a fork, so
          the pages stay shared with the children. The child: its own process group, the passed
          fds at the parent's numbers and every other fd above 2 closed, SIGINT back to Python's
          default, then ``module.main(args)``; it exits with what that returns (``os._exit``
          after the atexit functions). ``module.preload(args)`` runs in the zygote before the
          fork, when the module has it (the worker imports its driver there).
Lifetime: dies with its parent thread (PR_SET_PDEATHSIG, SIGKILL); when the control socket
          closes it SIGKILLs and reaps its children and exits; SIGINT is ignored.
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import gc
import importlib
import os
import selectors
import signal
import socket
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

import msgpack

#: modules the zygote may run (``python -m`` name); it imports each before forking
RUNNABLE = ("nsm_forwarder.actors.worker",)
#: largest control message (a spawn request: an argv of a few short options)
MAX_MESSAGE = 65536
#: fds one spawn request may pass
MAX_FDS = 16


def encode(msg: dict[str, Any]) -> bytes:
    """One control message."""
    return msgpack.packb(msg, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
    """One control message; ValueError if it is not a map."""
    msg = msgpack.unpackb(data, raw=False)
    if not isinstance(msg, dict):
        raise ValueError(f"unexpected control message {msg!r:.80}")
    return msg


def _send(sock: socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    socket.send_fds(sock, [encode(msg)], list(fds))


def _threads() -> int:
    """Threads of this process as the kernel sees them (C-level threads too)."""
    return len(os.listdir("/proc/self/task"))


def _prepare(module_name: str, argv: list[str]) -> ModuleType:
    """Import the module to run and what it will need (its ``preload(argv)``), then freeze."""
    module = importlib.import_module(module_name)
    preload = getattr(module, "preload", None)
    if preload is not None:
        preload(argv)
    if _threads() != 1:
        raise RuntimeError(f"importing {module_name} started a thread; forking is not safe")
    gc.freeze()
    return module


def _place_fds(fds: list[int], targets: list[int]) -> None:
    """Child: put received fds at the numbers the parent asked for; close every other fd > 2."""
    high = max([2, *fds, *targets]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, high) for fd in fds]
    for fd, target in zip(moved, targets, strict=True):
        os.dup2(fd, target, inheritable=True)
    low = 3
    for target in sorted(set(targets)):
        if target >= low:
            os.closerange(low, target)
            low = target + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _child(module: ModuleType, argv: list[str], fds: list[int], targets: list[int]) -> NoReturn:
    """Runs in the forked child: become what ``python -m module argv...`` would be, then exit."""
    code = 1
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _place_fds(fds, targets)
        gc.enable()
        sys.argv = [module.__name__, *argv]
        result = module.main(argv)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _spawn(
    sock: socket.socket, sel: selectors.BaseSelector, msg: dict[str, Any], fds: list[int]
) -> None:
    """Fork one child for a spawn request; answer ``spawned`` with its pidfd or ``failed``."""
    argv, targets = list(msg["argv"]), list(msg["targets"])
    try:
        if len(fds) != len(targets):
            raise ValueError(f"{len(fds)} fds received for {len(targets)} targets")
        module = _prepare(argv[2], argv[3:])
    except Exception as exc:
        for fd in fds:
            os.close(fd)
        fatal = isinstance(exc, RuntimeError)
        _send(sock, {"op": "failed", "message": f"{type(exc).__name__}: {exc}", "fatal": fatal})
        return
    pid = os.fork()
    if pid == 0:
        sel.close()
        sock.detach()
        _child(module, argv[3:], fds, targets)
    for fd in fds:
        os.close(fd)
    try:
        os.setpgid(pid, pid)  # as the child does: whichever runs first
    except OSError:
        pass
    pidfd = os.pidfd_open(pid)
    sel.register(pidfd, selectors.EVENT_READ, pid)
    _send(sock, {"op": "spawned", "pid": pid, "argv": argv}, [pidfd])


def serve(sock: socket.socket) -> int:
    """The zygote's loop: fork on request, report every exit; return when the parent closes."""
    gc.disable()  # no collections (and no freed holes) in the pages the children share
    try:
        for name in RUNNABLE:
            importlib.import_module(name)
        if _threads() != 1:
            raise RuntimeError("importing the worker started a thread; forking is not safe")
        probe = os.pidfd_open(os.getpid())
        os.close(probe)
        gc.freeze()
    except Exception as exc:
        _send(sock, {"op": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    _send(sock, {"op": "ready", "pid": os.getpid()})
    while True:
        for key, _ in sel.select():
            if key.data is None:
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
                if not data:
                    _kill_children(sel)
                    return 0
                msg = decode(data)
                if msg.get("op") == "spawn":
                    _spawn(sock, sel, msg, fds)
                else:
                    for fd in fds:
                        os.close(fd)
            else:
                _reap(sock, sel, key.fd, key.data)


def _reap(sock: socket.socket, sel: selectors.BaseSelector, pidfd: int, pid: int) -> None:
    sel.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    _send(sock, {"op": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _kill_children(sel: selectors.BaseSelector) -> None:
    """The parent went away: SIGKILL and reap every child still running."""
    for key in list(sel.get_map().values()):
        if key.data is None:
            continue
        try:
            signal.pidfd_send_signal(key.fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(key.data, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nsm-forwarder-zygote")
    parser.add_argument("--fd", type=int, required=True, help="the control socket")
    parser.add_argument("--parent", type=int, required=True, help="the parent's pid")
    args = parser.parse_args(argv)
    from nsm_forwarder.actors.worker import die_with_parent

    die_with_parent("nsm-zygote")
    if os.getppid() != args.parent:
        return 1  # the parent died before we asked to die with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    sock = socket.socket(fileno=args.fd)
    try:
        return serve(sock)
    except (ConnectionResetError, BrokenPipeError):
        return 0


if __name__ == "__main__":
    sys.exit(main())

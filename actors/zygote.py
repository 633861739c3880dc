"""Zygote: one clean helper process that forks the worker processes, so they share its imports.

A worker process holds about 20 MiB of imported Python (the driver, pyroute2, asyncio, ...). Spawned
fresh, each worker holds its own copy. The zygote imports them once, freezes them out of the
garbage collector's reach (``gc.freeze``) and forks each worker from that state: the pages stay
shared copy-on-write between the zygote and every worker, and the kernel divides them in PSS.

Process tree: main -> zygote (spawned with ``subprocess.Popen``, never forked from the
multithreaded main process) -> workers (forked from the single-threaded zygote).

Accepts (parent side): :func:`popen` (of :data:`SPAWNER`) with ``subprocess.Popen``'s arguments
          as WorkerProcess passes them; ``python -m <module>`` of a module in :data:`RUNNABLE`
          with ``process_group=0`` goes to the zygote, anything else (and everything once the
          zygote cannot work) to ``subprocess.Popen``.
Sends:    over the control socket (SOCK_SEQPACKET, msgpack): ``spawn {module, argv, targets}``
          with the fds to pass (SCM_RIGHTS); the zygote answers ``spawned {pid}`` with a pidfd
          of the child (SCM_RIGHTS) or ``failed {message, fatal}``, and reports ``exit {pid,
          code}`` when it reaps a child; ``ready {pid}`` once, after its imports.
Guarantees: a child looks to the parent as a Popen child does: same argv semantics (the module's
          ``main(argv[3:])`` runs; ``preload(argv[3:])``, if the module has one, is imported
          before the fork), ``pass_fds`` at the same fd numbers and every other fd closed, its
          own process group (pgid = pid), stdin/stdout/stderr of the zygote (stdin /dev/null).
          :class:`ZygoteChild` gives ``pid``, ``poll``, ``wait(timeout)``, ``send_signal`` (by
          pidfd: never a recycled pid) and ``returncode`` as ``subprocess.Popen`` defines it.
          The zygote never forks while it has a second thread (checked before every fork).
Lifetime: the zygote dies with the thread that spawned it (PR_SET_PDEATHSIG; that thread is its
          reader, which lives as long as the zygote) and exits, killing its children, when the
          control socket closes; a worker dies with the zygote (its own PR_SET_PDEATHSIG). A
          zygote that died is noticed by its reader: each child it left is waited for (by pidfd)
          and reported with -SIGKILL, and the next spawn starts a new zygote.
Fallback: when the zygote cannot start (no pidfd_open, a thread at import, a timeout) or fails
          twice in a row, :class:`Spawner` logs why once and uses ``subprocess.Popen`` from then
          on (the children the zygote has keep running).
"""

from __future__ import annotations

import argparse
import atexit
import fcntl
import gc
import importlib
import logging
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn, Protocol

import msgpack

log = logging.getLogger(__name__)

#: modules the zygote may run (``python -m`` name); it imports each before forking
RUNNABLE = ("nsm_forwarder.actors.worker",)
#: largest control message (a spawn request: an argv of a few short options)
MAX_MESSAGE = 65536
#: fds one spawn request may pass
MAX_FDS = 16


class ZygoteError(Exception):
    """The zygote could not start, or could not fork a child; ``fatal``: it cannot be used."""

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class Process(Protocol):
    """What the worker pool uses of a child process (``subprocess.Popen`` has it too)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


def _pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def _unpack(data: bytes) -> dict[str, Any]:
    msg = msgpack.unpackb(data, raw=False)
    if not isinstance(msg, dict):
        raise ZygoteError(f"unexpected control message {msg!r}")
    return msg


# -- parent side ---------------------------------------------------------------------------


class ZygoteChild:
    """A process forked by the zygote, as far as the parent can see and act on it."""

    def __init__(self, args: list[str], pid: int, pidfd: int) -> None:
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._lock = threading.Lock()  # guards _pidfd against close while signalling
        self._done = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the child unless it is known to have exited (as ``Popen.send_signal``)."""
        with self._lock:
            if self.returncode is not None or self._pidfd < 0:
                return
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _gone(self, timeout: float) -> bool:
        """True once the process has exited (its pidfd is readable), waiting up to timeout."""
        with self._lock:
            if self._pidfd < 0:
                return True
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            return bool(poller.poll(timeout * 1000))

    def _exited(self, code: int) -> None:
        with self._lock:
            if self.returncode is not None:
                return
            self.returncode = code
            if self._pidfd >= 0:
                os.close(self._pidfd)
                self._pidfd = -1
        self._done.set()


class _Link:
    """One zygote process and its control socket (one generation of the zygote)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = threading.Event()  # set once it is ready, or is gone
        self.failure = ""  # why it could not start
        self.cond = threading.Condition()  # guards the fields below
        self.alive = False  # ready and not gone
        self.gone = False
        self.stopping = False  # the parent closed it
        self.children: dict[int, ZygoteChild] = {}
        self.reply: dict[str, Any] | None = None


class Zygote:
    """The zygote process and the link to it (parent side). Thread-safe: spawns are serialized;
    one receive thread per zygote (which also spawned it) takes replies and exits."""

    def __init__(self, *, timeout: float = 15.0, python: str = sys.executable) -> None:
        self.timeout = timeout
        self.python = python
        self._lock = threading.Lock()  # one start or spawn at a time
        self._link: _Link | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The zygote's pid while it runs."""
        link = self._link
        if link is None or link.proc is None or not link.alive:
            return None
        return link.proc.pid

    def start(self) -> None:
        """Start the zygote and wait until it has imported what it preloads (no-op if it runs).
        Raises :class:`ZygoteError` (fatal) when it cannot start."""
        with self._lock:
            self._start()

    def _start(self) -> _Link:
        link = self._link
        if link is not None and link.alive:
            return link
        if not hasattr(os, "pidfd_open"):
            raise ZygoteError("os.pidfd_open is not available", fatal=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        link = _Link(ours)
        # The zygote dies with the thread that spawned it (PR_SET_PDEATHSIG is per thread), so
        # its own receive thread spawns it, and lives exactly as long as it does.
        reader = threading.Thread(
            target=self._run, args=(link, theirs), name="zygote-rx", daemon=True
        )
        reader.start()
        if not link.ready.wait(self.timeout):
            if link.proc is not None:
                link.proc.kill()
            reader.join(self.timeout)
            raise ZygoteError(f"the zygote did not start within {self.timeout:.0f} s", fatal=True)
        if not link.alive:
            reader.join(self.timeout)
            raise ZygoteError(f"the zygote could not start: {link.failure}", fatal=True)
        self._link, self._reader = link, reader
        return link

    def _run(self, link: _Link, theirs: socket.socket) -> None:
        try:
            link.proc = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "nsm_forwarder.actors.zygote",
                    "--fd",
                    str(theirs.fileno()),
                    "--parent",
                    str(os.getpid()),
                ],
                pass_fds=[theirs.fileno()],
                process_group=0,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            link.failure = str(exc)
            link.sock.close()
            link.ready.set()
            return
        finally:
            theirs.close()
        try:
            while True:
                data, fds, _, _ = socket.recv_fds(link.sock, MAX_MESSAGE, MAX_FDS)
                if not data:
                    break
                self._handle(link, _unpack(data), fds)
        except (OSError, ValueError, ZygoteError) as exc:
            log.warning("zygote (pid %d): control socket failed: %s", link.proc.pid, exc)
        finally:
            self._lost(link, link.proc)

    def _handle(self, link: _Link, msg: dict[str, Any], fds: list[int]) -> None:
        op = msg.get("op")
        if op == "ready":
            with link.cond:
                link.alive = True
            log.debug("zygote started (pid %d)", msg["pid"])
            link.ready.set()
        elif op == "exit":
            with link.cond:
                child = link.children.pop(msg["pid"], None)
            if child is not None:
                child._exited(msg["code"])
        elif op == "spawned" and len(fds) == 1:
            child = ZygoteChild(msg["argv"], msg["pid"], fds[0])
            with link.cond:
                link.children[child.pid] = child
                link.reply = {"op": "spawned", "child": child}
                link.cond.notify_all()
        elif op == "failed":
            with link.cond:
                link.reply = msg
                link.cond.notify_all()
        elif op == "error":  # it could not start; it exits next
            link.failure = str(msg.get("message"))
        else:
            for fd in fds:
                os.close(fd)
            log.warning("zygote: unexpected control message %r with %d fds", op, len(fds))

    def _lost(self, link: _Link, proc: subprocess.Popen[bytes]) -> None:
        """The zygote is gone (or going): reap it, then settle every child it left."""
        link.sock.close()
        try:
            proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with link.cond:
            was_alive, link.alive, link.gone = link.alive, False, True
            children, link.children = list(link.children.values()), {}
            link.cond.notify_all()
        if was_alive and not link.stopping:
            log.warning(
                "zygote (pid %d) exited with %s; %d child(ren) went with it",
                proc.pid,
                proc.returncode,
                len(children),
            )
        elif not link.failure:
            link.failure = f"it exited with {proc.returncode}"
        link.ready.set()
        for child in children:
            # it dies with the zygote (PR_SET_PDEATHSIG, SIGKILL); make sure before reporting
            if not child._gone(self.timeout):
                child.kill()
                child._gone(self.timeout)
            child._exited(-signal.SIGKILL)

    def spawn(self, argv: Sequence[str], pass_fds: Sequence[int] = ()) -> ZygoteChild:
        """Fork a child that runs ``argv`` (``[python, "-m", module, *args]``), starting the
        zygote first if it is not running. Raises :class:`ZygoteError` when it cannot."""
        if len(argv) < 3 or argv[1] != "-m" or argv[2] not in RUNNABLE:
            raise ZygoteError(f"the zygote runs only python -m {' | '.join(RUNNABLE)}")
        if len(pass_fds) > MAX_FDS:
            raise ZygoteError(f"at most {MAX_FDS} fds can be passed")
        with self._lock:
            link = self._start()
            with link.cond:
                link.reply = None
            request = {"op": "spawn", "argv": list(argv), "targets": list(pass_fds)}
            try:
                socket.send_fds(link.sock, [_pack(request)], list(pass_fds))
            except OSError as exc:
                raise ZygoteError(f"the zygote did not take the request: {exc}") from None
            with link.cond:
                link.cond.wait_for(lambda: link.reply is not None or link.gone, self.timeout)
                reply = link.reply
            if reply is None:
                if not link.gone and link.proc is not None:
                    link.proc.kill()  # it does not answer: a new one starts next time
                raise ZygoteError("the zygote did not answer a spawn request")
            if reply["op"] == "failed":
                raise ZygoteError(str(reply.get("message")), fatal=bool(reply.get("fatal")))
            child: ZygoteChild = reply["child"]
            return child

    def stop(self) -> None:
        """Close the control socket: the zygote kills its children and exits; wait for that."""
        with self._lock:
            link, reader = self._link, self._reader
            if link is not None:
                link.stopping = True
                try:
                    link.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            if reader is not None:
                reader.join(self.timeout)


class Spawner:
    """Starts processes through a zygote (started on the first spawn) while it works, with
    ``subprocess.Popen`` otherwise; once the zygote cannot work, ``disabled`` says why and every
    later process is spawned."""

    def __init__(self, zygote: Zygote | None = None) -> None:
        self._lock = threading.Lock()
        self._zygote = zygote
        self.disabled: str | None = None

    def popen(
        self,
        args: Sequence[str],
        *,
        pass_fds: Sequence[int] = (),
        process_group: int | None = None,
        stdin: int | None = None,
    ) -> Process:
        """``subprocess.Popen(args, pass_fds=..., process_group=..., stdin=...)``, by a fork of
        the zygote when it can (see the module's docstring)."""
        usable = (
            len(args) >= 3
            and args[0] == sys.executable
            and args[1] == "-m"
            and args[2] in RUNNABLE
            and process_group == 0
            and stdin in (None, subprocess.DEVNULL)
        )
        with self._lock:
            if usable and self.disabled is None and self._zygote is None:
                self._zygote = Zygote()
            zygote = self._zygote if usable and self.disabled is None else None
        for attempt in (1, 2):
            if zygote is None:
                break
            try:
                return zygote.spawn(args, pass_fds)
            except ZygoteError as exc:
                if attempt == 1 and not exc.fatal:
                    log.warning("zygote spawn failed (%s); trying again", exc)
                    continue
                # the children it has keep running; it exits with this process
                with self._lock:
                    self.disabled = str(exc)
                log.warning("not using the zygote any more (%s): spawning processes", exc)
        return subprocess.Popen(
            list(args), pass_fds=pass_fds, process_group=process_group, stdin=stdin
        )

    def shutdown(self) -> None:
        """Stop the zygote, if it runs (its children are killed)."""
        with self._lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.stop()


#: the spawner of this process: WorkerProcess starts every worker with it
SPAWNER = Spawner()
popen = SPAWNER.popen


# -- the zygote process ----------------------------------------------------------------------


def _send(sock: socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    socket.send_fds(sock, [_pack(msg)], list(fds))


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
                msg = _unpack(data)
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

    die_with_parent()
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

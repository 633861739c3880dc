"""Zygote (parent side): workers forked from one clean helper process share its imports.

A worker process holds about 20 MiB of imported Python (the driver, pyroute2, asyncio, ...);
spawned fresh, each holds its own copy. The zygote (:mod:`.zygote_process`) imports them once,
freezes them (``gc.freeze``) and forks each worker from that state: the pages stay shared
copy-on-write between the zygote and every worker, and the kernel divides them in PSS.

Process tree: main -> zygote (spawned with ``subprocess.Popen``, never forked from the
multithreaded main process) -> workers (forked from the single-threaded zygote).

Accepts:  :func:`popen` (of :data:`SPAWNER`) with ``subprocess.Popen``'s arguments as
          WorkerProcess passes them; ``python -m <module>`` of a module in ``RUNNABLE`` with
          ``process_group=0`` goes to the zygote, anything else (and everything once the zygote
          cannot work) to ``subprocess.Popen``.
Sends:    spawn requests with the fds to pass over the zygote's control socket (the protocol is
          in :mod:`.zygote_process`); one at a time, each waits for its answer.
Guarantees: a child looks to the parent as a Popen child does: the module's ``main(args)`` runs
          with the same arguments, ``pass_fds`` at the same fd numbers and every other fd
          closed, its own process group (pgid = pid), the zygote's stdin (/dev/null), stdout
          and stderr (the main process's). :class:`ZygoteChild` gives ``pid``, ``poll``,
          ``wait(timeout)``, ``send_signal`` (by pidfd: never a recycled pid) and
          ``returncode`` as ``subprocess.Popen`` defines them (the zygote reaps and reports).
Lifetime: the zygote dies with the thread that spawned it (PR_SET_PDEATHSIG is per thread: its
          receive thread spawns it and lives exactly as long as it) and exits, killing its
          children, when the control socket closes; a worker dies with the zygote (its own
          PR_SET_PDEATHSIG). A zygote that died is noticed by its receive thread: each child it
          left is waited for (by pidfd) and reported with -SIGKILL, and the next spawn starts a
          new zygote.
Fallback: when the zygote cannot start (no pidfd_open, a thread at import, a timeout) or fails
          twice in a row, :class:`Spawner` logs why once and uses ``subprocess.Popen`` from then
          on (the children the zygote has keep running).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from nsm_forwarder.actors.zygote_process import (
    MAX_FDS,
    MAX_MESSAGE,
    RUNNABLE,
    decode,
    encode,
)

log = logging.getLogger(__name__)


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
                    "nsm_forwarder.actors.zygote_process",
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
                self._handle(link, decode(data), fds)
        except (OSError, ValueError) as exc:
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
                socket.send_fds(link.sock, [encode(request)], list(pass_fds))
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

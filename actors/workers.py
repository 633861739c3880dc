"""The worker pool: N DriverHost processes and the links to them (parent side).

Accepts:  ``call(method, *args, timeout)`` from any thread but the loop's (blocking), and
          ``acall(method, *args, timeout)`` on the asyncio loop (the ConnectionActors).
Sends:    WorkerCall to the least busy live worker; waits for its WorkerReply.
Guarantees: calls on one worker are answered in order (but for a call its driver finishes
          later, e.g. a Close batch's group delete: see worker.py); a worker that dies (crash,
          SIGKILL) is replaced at once and every call it held fails with :class:`WorkerLost`
          (retriable, UNAVAILABLE); a worker that does not answer within the timeout is killed
          and replaced and the call fails with :class:`OperationTimeout` (DEADLINE_EXCEEDED).
Threads:  with a ``loop`` (a running forwarder) the loop reads every worker's replies (a reader
          callback per socket: no thread hop between a reply and the loop actor awaiting it);
          without one, a receive thread per worker does. Senders hold a per-worker lock.
Processes: forked by the zygote (zygote.py: one single-threaded helper process, itself spawned,
          never forked from this multithreaded one; a plain spawn when it cannot work), in
          their own process group, linked by a socketpair; they die with us.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nsm_forwarder.actors import tracing, zygote
from nsm_forwarder.actors.logs import XCON_ID
from nsm_forwarder.actors.messages import Decoder, WorkerCall, WorkerReply, pack
from nsm_forwarder.drivers.errors import ForwarderError, OperationTimeout, WorkerLost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerStatistics:
    index: int
    pid: int
    alive: bool
    in_flight: int
    calls: int


class WorkerProcess:
    """One DriverHost process and its socket; created by the pool."""

    def __init__(
        self,
        index: int,
        driver: str,
        log_level: str,
        on_exit: Any,
        faults: str = "",
        *,
        log_format: str = "text",
        trace_endpoint: str = "",
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.index = index
        self._on_exit = on_exit
        self._pending: dict[int, concurrent.futures.Future[Any] | asyncio.Future[Any]] = {}
        self._lock = threading.Lock()
        self._corr = itertools.count(1)
        self.calls = 0
        self.alive = True
        self.broken = False
        self.ready = False  # the driver's init has answered
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = zygote.popen(
                [
                    sys.executable,
                    "-m",
                    "nsm_forwarder.actors.worker",
                    "--fd",
                    str(child.fileno()),
                    "--driver",
                    driver,
                    "--index",
                    str(index),
                    "--log-level",
                    log_level,
                    "--faults",
                    faults,
                    "--log-format",
                    log_format,
                    *(["--trace-endpoint", trace_endpoint] if trace_endpoint else []),
                ],
                pass_fds=[child.fileno()],
                process_group=0,
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        self.sock = parent
        self._loop_thread = 0  # the loop's thread, once it reads our replies
        self._decoder = Decoder()
        self._loop = loop
        self._rx: threading.Thread | None = None
        if loop is None:
            self._rx = threading.Thread(
                target=self._receive, name=f"worker-{index}-rx", daemon=True
            )
            self._rx.start()
        else:
            self._closed = threading.Event()  # set once the reader is gone
            loop.call_soon_threadsafe(self._watch)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(
        self, method: str, args: list[Any], meta: dict[str, Any] | None = None
    ) -> concurrent.futures.Future[Any]:
        """Send a call; its reply resolves the returned future (any thread)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._send(future, method, args, meta)
        return future

    def asubmit(
        self, method: str, args: list[Any], meta: dict[str, Any] | None = None
    ) -> asyncio.Future[Any]:
        """Send a call from the loop that reads our replies; await the returned future."""
        assert self._loop is not None, "asubmit needs a worker read by the loop"
        future: asyncio.Future[Any] = self._loop.create_future()
        self._send(future, method, args, meta)
        return future

    def _send(
        self,
        future: concurrent.futures.Future[Any] | asyncio.Future[Any],
        method: str,
        args: list[Any],
        meta: dict[str, Any] | None,
    ) -> None:
        with self._lock:
            if not self.alive:
                raise WorkerLost(f"worker {self.index} is not running")
            corr = next(self._corr)
            self._pending[corr] = future
            self.calls += 1
            try:
                self.sock.sendall(pack(WorkerCall(corr, method, args, meta)))
            except OSError as exc:
                self._pending.pop(corr, None)
                self.broken = True  # the receive thread reports it lost soon; skip it meanwhile
                raise WorkerLost(f"worker {self.index}: send failed: {exc}") from None

    # --- replies: a receive thread, or the loop's reader callback -----------------------------

    def _receive(self) -> None:
        try:
            while self._received(self.sock.recv(65536)):
                pass
        except OSError:
            pass
        self._lost()

    def _watch(self) -> None:
        """On the loop: read replies as they arrive."""
        assert self._loop is not None
        self._loop_thread = threading.get_ident()
        try:
            self._loop.add_reader(self.sock.fileno(), self._readable)
        except (OSError, ValueError):  # closed before the loop got here
            self._reader_gone()

    def _readable(self) -> None:
        try:
            more = self._received(self.sock.recv(65536))
        except OSError:
            more = False
        if not more:
            self._reader_gone()

    def _reader_gone(self) -> None:
        assert self._loop is not None
        try:
            self._loop.remove_reader(self.sock.fileno())
        except (OSError, ValueError):
            pass
        self._closed.set()
        # reaping the process and starting a replacement may block: not on the loop
        threading.Thread(target=self._lost, name=f"worker-{self.index}-lost", daemon=True).start()

    def _received(self, data: bytes) -> bool:
        """Resolve the calls ``data`` answers; False at end of stream."""
        if not data:
            return False
        for msg in self._decoder.feed(data):
            if isinstance(msg, WorkerReply):
                self._resolve(msg)
        return True

    def _resolve(self, reply: WorkerReply) -> None:
        with self._lock:
            future = self._pending.pop(reply.corr, None)
        if future is None:
            return
        if reply.ok:
            self._settle(future, reply.result, None)
        else:
            self._settle(future, None, ForwarderError.from_wire(reply.error or {}))

    def _settle(
        self,
        future: concurrent.futures.Future[Any] | asyncio.Future[Any],
        value: Any,
        exc: BaseException | None,
    ) -> None:
        """Resolve a call's future from whichever thread we are on."""
        if isinstance(future, asyncio.Future) and threading.get_ident() != self._loop_thread:
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(_resolve_future, future, value, exc)
            except RuntimeError:  # the loop is closed: nobody awaits it any more
                pass
        else:
            _resolve_future(future, value, exc)

    def _lost(self) -> None:
        with self._lock:
            was_alive, self.alive = self.alive, False
            pending, self._pending = self._pending, {}
        code = self.proc.wait()
        for future in pending.values():
            lost = WorkerLost(f"worker {self.index} (pid {self.pid}) exited with {code}")
            self._settle(future, None, lost)
        self.sock.close()
        if was_alive:
            self._on_exit(self, code)

    def kill(self) -> None:
        """SIGKILL the process; the receive thread then reports it lost."""
        try:
            self.proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 2.0) -> None:
        """Orderly stop: close our end (the worker exits on EOF), kill if it lingers."""
        with self._lock:
            self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        if self._rx is not None:
            self._rx.join(timeout)
        else:
            self._closed.wait(timeout)

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(self.index, self.pid, self.alive, self.in_flight, self.calls)


@dataclass(frozen=True)
class PoolStatistics:
    size: int
    alive: int
    restarts: int
    workers: tuple[WorkerStatistics, ...]


class WorkerPool:
    """``size`` worker processes running ``driver``; replaces any that die."""

    def __init__(
        self,
        size: int,
        driver: str,
        *,
        init: dict[str, Any] | None = None,
        timeout: float = 10.0,
        log_level: str = "INFO",
        faults: str = "",
        on_restart: Callable[[str], None] = lambda kind: None,
        log_format: str = "text",
        trace_endpoint: str = "",
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self.driver = driver
        self.init_config = dict(init or {})
        #: What the driver's ``init`` returned (mechanisms, egress), once ``start`` has run.
        self.capabilities: dict[str, Any] = {}
        self.timeout = timeout
        self.log_level = log_level
        self.faults = faults
        self.on_restart = on_restart
        #: the workers' log format and, when tracing is on, their OTLP endpoint
        self.log_format = log_format
        self.trace_endpoint = trace_endpoint
        #: the asyncio loop that reads the workers' replies and runs acall (None: threads)
        self.loop = loop
        self.restarts = 0
        self._workers: list[WorkerProcess] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = False

    def start(self, wait: float = 30.0) -> None:
        """Spawn every worker and wait until each has run the driver's ``init``.

        Raises the driver's ForwarderError when ``init`` fails (the forwarder cannot work
        here), after stopping the workers.
        """
        with self._lock:
            spawned = [self._spawn(i) for i in range(self.size)]
            self._workers = [w for w, _ in spawned]
        deadline = time.monotonic() + wait
        try:
            for _, ready in spawned:
                self.capabilities = ready.result(max(0.1, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, index: int) -> tuple[WorkerProcess, concurrent.futures.Future[Any]]:
        """Start worker ``index``; its first call is always the driver's ``init``. Calls go to
        it only once that has answered, so starting up never eats into a call's timeout."""
        worker = WorkerProcess(
            index,
            self.driver,
            self.log_level,
            self._exited,
            self.faults,
            log_format=self.log_format,
            trace_endpoint=self.trace_endpoint,
            loop=self.loop,
        )
        log.debug("worker %d started (pid %d)", index, worker.pid)
        ready = worker.submit("init", [self.init_config])
        ready.add_done_callback(lambda _: self._ready(worker))
        return worker, ready

    def _ready(self, worker: WorkerProcess) -> None:
        with self._lock:
            worker.ready = True
            self._changed.notify_all()

    def _exited(self, worker: WorkerProcess, code: int) -> None:
        with self._lock:
            if self._stopping or worker not in self._workers:
                return
            self.restarts += 1
            log.warning(
                "worker %d (pid %d) exited with %s; starting a replacement",
                worker.index,
                worker.pid,
                code,
            )
            replacement, ready = self._spawn(worker.index)
            ready.add_done_callback(_log_init_failure)
            self._workers[self._workers.index(worker)] = replacement
            self._changed.notify_all()
        self.on_restart(f"worker-{worker.index}")

    def _pick(self, deadline: float) -> WorkerProcess:
        with self._lock:
            while True:
                worker = self._least_busy(deadline)
                if worker is not None:
                    return worker
                self._changed.wait(deadline - time.monotonic())

    async def _apick(self, deadline: float) -> WorkerProcess:
        """:meth:`_pick` on the loop: while no worker is ready (one is being replaced), look
        again every few milliseconds rather than block the loop."""
        while True:
            with self._lock:
                worker = self._least_busy(deadline)
            if worker is not None:
                return worker
            await asyncio.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def _least_busy(self, deadline: float) -> WorkerProcess | None:
        """The live, ready worker with the fewest calls in flight; None while there is none
        and ``deadline`` has not passed. Call with the lock held."""
        if self._stopping:
            raise WorkerLost("the worker pool is stopping")
        live = [w for w in self._workers if w.alive and w.ready and not w.broken]
        if live:
            return min(live, key=lambda w: w.in_flight)
        if deadline - time.monotonic() <= 0:
            raise WorkerLost("no worker process is ready")
        return None

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Run a driver method in a worker and return its result (raises ForwarderError).

        The call carries the caller's cross-connect id (:data:`~nsm_forwarder.actors.logs.
        XCON_ID`, for the worker's logs) and, while tracing is on, its trace context."""
        meta = _meta()
        if tracing.enabled:
            with tracing.worker_call(method, meta) as traced:
                return self._call(method, list(args), timeout, traced)
        return self._call(method, list(args), timeout, meta)

    def _call(
        self, method: str, args: list[Any], timeout: float | None, meta: dict[str, Any] | None
    ) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        worker = self._pick(deadline)
        future = worker.submit(method, args, meta)
        try:
            return future.result(max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            raise self._timed_out(worker, method, timeout) from None

    async def acall(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """:meth:`call` for the asyncio loop given as ``loop`` (it reads the replies)."""
        meta = _meta()
        if tracing.enabled:
            with tracing.worker_call(method, meta) as traced:
                return await self._acall(method, list(args), timeout, traced)
        return await self._acall(method, list(args), timeout, meta)

    async def _acall(
        self, method: str, args: list[Any], timeout: float | None, meta: dict[str, Any] | None
    ) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        worker = await self._apick(deadline)
        future = worker.asubmit(method, args, meta)
        try:
            async with asyncio.timeout_at(self._loop_time(deadline)):
                return await future
        except TimeoutError:
            raise self._timed_out(worker, method, timeout) from None

    def _loop_time(self, deadline: float) -> float:
        """``deadline`` (time.monotonic) on the loop's clock."""
        assert self.loop is not None
        return self.loop.time() + (deadline - time.monotonic())

    @staticmethod
    def _timed_out(worker: WorkerProcess, method: str, timeout: float) -> OperationTimeout:
        """Kill a worker that did not finish ``method`` in time; the caller's error."""
        log.error(
            "worker %d (pid %d) did not finish %s within %.1f s; killing it",
            worker.index,
            worker.pid,
            method,
            timeout,
        )
        worker.kill()
        return OperationTimeout(
            f"{method} did not finish within {timeout:.1f} s (worker {worker.index} killed)"
        )

    def workers(self) -> list[WorkerProcess]:
        with self._lock:
            return list(self._workers)

    def statistics(self) -> PoolStatistics:
        workers = tuple(w.statistics() for w in self.workers())
        return PoolStatistics(self.size, sum(w.alive for w in workers), self.restarts, workers)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            workers = list(self._workers)
            self._changed.notify_all()
        for worker in workers:
            worker.stop()


def _meta() -> dict[str, Any] | None:
    """A worker call's meta: the caller's cross-connect id, for the worker's log lines."""
    xcon_id = XCON_ID.get()
    return {"xcon_id": xcon_id} if xcon_id is not None else None


def _resolve_future(
    future: concurrent.futures.Future[Any] | asyncio.Future[Any],
    value: Any,
    exc: BaseException | None,
) -> None:
    if future.done():  # an awaited call that timed out was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


def _log_init_failure(ready: concurrent.futures.Future[Any]) -> None:
    exc = ready.exception()
    if exc is not None:
        log.error("a replacement worker failed its driver init: %s", exc)

"""The API unix socket server: one thread, a selector loop, non-blocking client sockets.

Like VPP's socket API (``src/vlibmemory/socket_api.c``) a registration is made when a client
connects, not at ``sockclnt_create``; its handle is the registration pool index with bit 31 set
(``sock_api_registration_handle``), index 0 being the listener itself, freed indices reused last
freed first. A client that closes its end, or sends bytes that are not VPP framing, loses its
registration; the other clients are not affected.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.vpp.peer.framing import Deframer, FrameError, frame
from tests.vpp.peer.linux import LinuxError, clear_stale
from tests.vpp.peer.model import IndexPool

log = logging.getLogger(__name__)
HANDLE_BIT = 1 << 31


@dataclass
class Outcome:
    """What the dispatcher wants done after one message."""

    sends: list[tuple[int, bytes]] = field(default_factory=list)  # (handle, payload)
    close: bool = False  # close the sender once the sends are out
    drop: bool = False  # close the sender now; send nothing
    close_also: list[int] = field(default_factory=list)  # other handles to close


@dataclass
class _Client:
    sock: socket.socket
    handle: int
    deframer: Deframer = field(default_factory=Deframer)
    out: bytearray = field(default_factory=bytearray)
    closing: bool = False


class ApiServer:
    """Serves ``path`` until :meth:`stop`; ``dispatch(handle, payload)`` runs in the loop."""

    def __init__(
        self,
        path: str,
        dispatch: Callable[[int, bytes], Outcome],
        on_close: Callable[[int], None] = lambda handle: None,
    ) -> None:
        self.path = path
        self.dispatch = dispatch
        self.on_close = on_close
        self._clients: dict[int, _Client] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()

    # -- control (any thread) ----------------------------------------------------------------
    def start(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            clear_stale(self.path)
        except LinuxError as exc:
            raise OSError(f"cannot serve {self.path}: {exc}") from exc
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._regs = IndexPool()
        self._regs.get()  # index 0: the listener's own registration
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fake-vpp-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Drop every client, close the listener and remove the socket file."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join(10)
        self._thread = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def live(self, handle: int) -> bool:
        return handle in self._clients

    def handles(self) -> list[int]:
        with self._lock:
            return sorted(self._clients)

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._sel = sel
        try:
            while not self._stop.is_set():
                for key, events in sel.select(timeout=1.0):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        client = key.data
                        if events & selectors.EVENT_WRITE:
                            self._flush(client)
                        if events & selectors.EVENT_READ and client.handle in self._clients:
                            self._read(client)
        except Exception:
            log.exception("fake VPP API loop failed")
        finally:
            for client in list(self._clients.values()):
                self._close(client)
            sel.close()
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        client = _Client(conn, self._regs.get() | HANDLE_BIT)
        with self._lock:
            self._clients[client.handle] = client
        self._sel.register(conn, selectors.EVENT_READ, client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(client)
            return
        try:
            payloads = client.deframer.feed(data)
        except FrameError:
            self._close(client)
            return
        for payload in payloads:
            try:
                outcome = self.dispatch(client.handle, payload)
            except Exception:
                log.exception("fake VPP: dispatch failed; dropping the client")
                outcome = Outcome(drop=True)
            if outcome.drop:
                self._close(client)
                return
            for handle, body in outcome.sends:
                target = self._clients.get(handle)
                if target is not None and not target.closing:
                    target.out += frame(body)
                    self._flush(target)
            for handle in outcome.close_also:
                other = self._clients.get(handle)
                if other is not None and other is not client:
                    self._close(other)
            if outcome.close:
                client.closing = True
                self._flush(client)
                return

    def _flush(self, client: _Client) -> None:
        if client.handle not in self._clients:
            return
        try:
            while client.out:
                sent = client.sock.send(client.out)
                del client.out[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(client)
            return
        if client.closing and not client.out:
            self._close(client)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
        self._sel.modify(client.sock, events, client)

    def _close(self, client: _Client) -> None:
        with self._lock:
            if self._clients.pop(client.handle, None) is None:
                return
        with contextlib.suppress(Exception):
            self._sel.unregister(client.sock)
        with contextlib.suppress(OSError):
            client.sock.shutdown(socket.SHUT_RDWR)
        client.sock.close()
        self._regs.put(client.handle & ~HANDLE_BIT)
        self.on_close(client.handle)

"""vpp_papi's socket transport without its reader thread: a reply is read by the caller.

``vpp_papi.vpp_transport_socket.VppTransport`` reads VPP's socket on a thread of its own and
hands every message to the caller through a ``multiprocessing.Queue`` (pickled, written to a
pipe by the queue's feeder thread, read and unpickled again): three threads and a pipe for each
reply, about 0.15 ms of a trivial call's 0.2 ms here. A worker makes one call at a time and
subscribes to no events, so :class:`SyncTransport` reads the reply itself, right after sending
the request, with the socket's timeout as the read timeout (a call takes about 0.05 ms).

Same contract for the client: a broken or silent connection is an ``OSError`` (a timeout
is ``TimeoutError``; a closed socket makes ``read`` return None, which vpp_papi turns into
``VPPIOError``); a write that fails says ``Sendall error``. Only synchronous use is supported.
"""

from __future__ import annotations

from socket import AF_UNIX, SOCK_STREAM
from socket import socket as Socket
from typing import Any

from vpp_papi.vpp_transport_socket import VppTransport, VppTransportSocketIOError

#: VPP's message ids of the socket handshake (the memclnt messages come first)
SOCKCLNT_CREATE, SOCKCLNT_CREATE_REPLY = 15, 16


class SyncTransport(VppTransport):  # type: ignore[misc]  # vpp_papi has no type hints
    """Replies read on the calling thread; see the module docstring."""

    socket: Socket | None

    def connect(
        self, name: str, pfx: Any, msg_handler: Any, rx_qlen: int, do_async: bool = False
    ) -> int:
        """Connect and say hello (``sockclnt_create``): the message table comes back."""
        if do_async:
            raise VppTransportSocketIOError(1, "SyncTransport: no asynchronous mode")
        if self.socket is not None:
            raise VppTransportSocketIOError(1, "SyncTransport: disconnect first")
        sock = Socket(AF_UNIX, SOCK_STREAM)
        sock.settimeout(self.read_timeout)
        try:
            sock.connect(self.server_address)
        except OSError:
            sock.close()
            raise
        self.socket, self.connected, self.do_async = sock, True, False
        hello = self.parent.messages["sockclnt_create"]
        self.write(hello.pack({"_vl_msg_id": SOCKCLNT_CREATE, "name": name, "context": 124}))
        msg = self._read()
        if not msg or self.parent.header.unpack(msg, 0)[0].msgid != SOCKCLNT_CREATE_REPLY:
            raise VppTransportSocketIOError(1, "no sockclnt_create_reply from VPP")
        reply, _ = self.parent.messages["sockclnt_create_reply"].unpack(msg)
        self.socket_index = reply.index
        self.message_table = {m.name: m.index for m in reply.message_table}
        return 0

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next message from VPP, None when the connection was closed."""
        if not self.connected or self.socket is None:
            raise VppTransportSocketIOError(1, "Not connected")
        if timeout is not None:
            self.socket.settimeout(timeout)
        try:
            msg: bytes | None = self._read()
        finally:
            if timeout is not None:
                self.socket.settimeout(self.read_timeout)
        return msg or None

    def disconnect(self) -> int:
        """Say goodbye (``sockclnt_delete``, where the connection still works) and close."""
        if self.connected:
            try:
                self.parent.api.sockclnt_delete(index=self.socket_index)
            except (OSError, self.parent.VPPApiError):
                pass
        self.connected = False
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        self.message_table = {}
        return 0

"""VPP's API socket framing.

Each message on the stream is a 16-byte ``msgbuf_t`` header -- ``>QII``: an unused u64 (a
queue pointer in shared memory, 0 on the socket), the payload length, and a u32 gc mark (0) --
followed by the payload, whose first two bytes are the big-endian message id
(``src/vlibmemory/socket_api.c`` ``vl_socket_read_ready`` in VPP; ``vpp_transport_socket.py``
in vpp_papi).
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">QII")
#: larger payloads are treated as garbage (VPP's biggest messages are far smaller)
MAX_PAYLOAD = 16 << 20


class FrameError(Exception):
    """The byte stream is not VPP framing."""


def frame(payload: bytes) -> bytes:
    return HEADER.pack(0, len(payload), 0) + payload


class Deframer:
    """Accumulates stream bytes; yields whole payloads."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= HEADER.size:
            _, length, _ = HEADER.unpack_from(self._buf, 0)
            if length > MAX_PAYLOAD:
                raise FrameError(f"payload length {length}")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            payload = bytes(self._buf[HEADER.size : end])
            del self._buf[:end]
            if len(payload) < 2:
                raise FrameError("payload without a message id")
            out.append(payload)
        return out

"""A stats segment that ``vpp_papi.vpp_stats.VPPStats`` reads, and the socket that hands it out.

Layout (``src/vlib/stats/shared.h``, read by ``vpp_stats.py``): a header of u64 version (2),
the segment's base address, u64 epoch, u64 in_progress and a pointer to the directory vector;
every pointer is an address in VPP's mapping, so a reader subtracts ``base``. A vector is its
elements preceded by an 8-byte header whose first u32 is the length. A directory entry is
``{u32 type; u64 value; char name[128]}`` (144 bytes): type 2 simple counters and 3 combined
counters point to a per-thread vector of pointers to the counter vectors, type 4 points to a
vector of string vectors (NUL included in the length), type 6 is a symlink holding (directory
index, counter index). Interfaces get ``/interfaces/<name>/<counter>`` symlinks with ``/`` in the
name turned into ``_`` (``src/vnet/interface/stats.c``). One thread.

Each publication is written into the half of the segment not in use, then the directory pointer
is switched and the epoch bumped while ``in_progress`` is set, so a reader either sees the old
data or retries (the optimistic lock in ``StatsLock``). The socket is SOCK_SEQPACKET and sends
the segment's memfd with SCM_RIGHTS on accept, as ``stats_socket_accept_ready``
(``src/vlib/stats/init.c``) does.
"""

from __future__ import annotations

import array
import contextlib
import mmap
import os
import socket
import struct
import threading
from collections.abc import Callable, Sequence

from tests.vpp.peer.linux import clear_stale
from tests.vpp.peer.model import COMBINED_COUNTERS, SIMPLE_COUNTERS

BASE = 0x7F1E_0000_0000
VERSION = 2
HEADER_SIZE = 64
STAT_DIR_TYPE_COUNTER_VECTOR_SIMPLE = 2
STAT_DIR_TYPE_COUNTER_VECTOR_COMBINED = 3
STAT_DIR_TYPE_NAME_VECTOR = 4
STAT_DIR_TYPE_SYMLINK = 6
_ENTRY = struct.Struct("IQ128s")
_U64 = struct.Struct("Q")


class _Heap:
    """Bump allocation of vectors inside one half of the segment."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.buf = bytearray()

    def vector(self, data: bytes, length: int) -> int:
        """Place a vector; return its address (the first element's)."""
        while (self.offset + len(self.buf) + 8) % 16:
            self.buf.append(0)
        self.buf += struct.pack("I4x", length)
        address = BASE + self.offset + len(self.buf)
        self.buf += data
        return address


class StatsSegment:
    def __init__(self, size: int = 16 << 20) -> None:
        self.size = size
        self.fd = os.memfd_create("fake-vpp-stats")
        os.ftruncate(self.fd, size)
        self.mm = mmap.mmap(self.fd, size)
        self.half = (size - HEADER_SIZE) // 2
        self.which = 0
        self.epoch = 0
        struct.pack_into("QQQQQ", self.mm, 0, VERSION, BASE, 0, 0, 0)

    def publish(
        self,
        names: Sequence[str],
        simple: dict[str, list[int]],
        combined: dict[str, list[tuple[int, int]]],
        live: Sequence[tuple[int, str]],
    ) -> None:
        offset = HEADER_SIZE + self.which * self.half
        heap = _Heap(offset)
        entries: list[tuple[int, int, str]] = []
        strings = [heap.vector(n.encode() + b"\0", len(n) + 1) for n in names]
        names_vec = heap.vector(b"".join(_U64.pack(p) for p in strings), len(strings))
        entries.append((STAT_DIR_TYPE_NAME_VECTOR, names_vec, "/if/names"))
        index_of: dict[str, int] = {}
        for counter in SIMPLE_COUNTERS:
            values = simple[counter]
            data = heap.vector(b"".join(_U64.pack(v) for v in values), len(values))
            threads = heap.vector(_U64.pack(data), 1)
            index_of[counter] = len(entries)
            entries.append((STAT_DIR_TYPE_COUNTER_VECTOR_SIMPLE, threads, f"/if/{counter}"))
        for counter in COMBINED_COUNTERS:
            pairs = combined[counter]
            data = heap.vector(b"".join(struct.pack("QQ", *p) for p in pairs), len(pairs))
            threads = heap.vector(_U64.pack(data), 1)
            index_of[counter] = len(entries)
            entries.append((STAT_DIR_TYPE_COUNTER_VECTOR_COMBINED, threads, f"/if/{counter}"))
        for sw_if_index, name in live:
            for counter in (*SIMPLE_COUNTERS, *COMBINED_COUNTERS):
                link = index_of[counter] | (sw_if_index << 32)
                entries.append(
                    (STAT_DIR_TYPE_SYMLINK, link, f"/interfaces/{name.replace('/', '_')}/{counter}")
                )
        directory = b"".join(_ENTRY.pack(t, v, n.encode()[:127]) for t, v, n in entries)
        dir_vec = heap.vector(directory, len(entries))
        if len(heap.buf) > self.half:
            raise RuntimeError(f"stats segment too small ({len(heap.buf)} > {self.half})")
        struct.pack_into("Q", self.mm, 24, 1)  # in_progress
        self.mm[offset : offset + len(heap.buf)] = heap.buf
        self.epoch += 1
        struct.pack_into("Q", self.mm, 16, self.epoch)
        struct.pack_into("Q", self.mm, 32, dir_vec)
        struct.pack_into("Q", self.mm, 24, 0)
        self.which ^= 1

    def close(self) -> None:
        """Drop the fake's mapping; readers keep theirs (stale, as after a VPP crash)."""
        self.mm.close()
        os.close(self.fd)


class StatsServer:
    """SOCK_SEQPACKET listener that sends ``fd()`` to whoever connects."""

    def __init__(self, path: str, fd: Callable[[], int]) -> None:
        self.path = path
        self.fd = fd
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        clear_stale(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(self.path)
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()

    def _run(self, sock: socket.socket) -> None:
        while self._sock is sock:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError), conn:
                fds = array.array("i", [self.fd()])
                conn.sendmsg([b""], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._thread is not None:
            self._thread.join(5)
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

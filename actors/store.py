"""Store: every cross-connect as applied, in an append-only journal, so a restart forgets nothing.

Used by ConnectionActors (each only for its own id, on the asyncio loop) and by the
Supervisor's reconcile phase (in a thread, before serving). Thread-safe (one lock); every
method is one journal record, and reads come from memory.

A row holds the cross-connect as last answered to nsmd (``xcon``, protobuf bytes), the driver
``plan`` it came from and the ``applied`` record the driver returned (everything needed to remove
it), plus an optional ``pending`` operation written *before* touching the data plane:

- ``{"op": "apply", "plan": P}``: a Request is building plan P (over the applied one, if any);
- ``{"op": "close"}``: a Close is removing the applied record.

So a crash at any point leaves a row that says exactly what may exist in the kernel: reconcile
finishes a pending Close, sweeps what an unanswered Request may have left (then keeps the
previous applied state, if any), and checks every committed row against the data plane.
A row without ``applied`` only exists while its first Request is pending.

The journal (``xcons.journal`` in the state directory): each change appends one record, the
row's whole new state (or its deletion), framed as ``length (u32 LE) | crc32 (u32 LE) |
msgpack``, with one ``write`` and no fsync. A record is in the kernel's page cache when the call
returns, so it survives the forwarder being killed at any point (kill -9, OOM); only a crash of
the whole node may lose the last records, and the pods and their interfaces do not survive that
either. A write cut short by the kill is a bad record at the end: it is dropped when the journal
is opened (its operation never got past that write). One record costs about 3 us where a SQLite
transaction (WAL, synchronous=NORMAL) cost 30-100 us; a Request writes two, a Close two.

When the journal holds more than :data:`COMPACT_FACTOR` times what the live rows need (and at
least :data:`COMPACT_MIN` bytes), it is rewritten with one record per row into a new file,
fsynced, and renamed over the old one: a crash at any moment leaves either journal whole.
A state directory is used by one forwarder at a time (an exclusive lock on ``xcons.lock``).
A state directory written by an earlier version (SQLite, ``xcons.sqlite3``) is imported once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

log = logging.getLogger(__name__)

JOURNAL = "xcons.journal"
LOCK = "xcons.lock"
#: the SQLite file of earlier versions, imported once and renamed with ``.imported``
LEGACY = "xcons.sqlite3"
#: rewrite the journal when it is this many times the size of the live rows ...
COMPACT_FACTOR = 4
#: ... and at least this big
COMPACT_MIN = 4 << 20
_FRAME = struct.Struct("<II")  # payload length, crc32 of the payload


class StoreError(Exception):
    """The state directory cannot be used (locked by another forwarder, unreadable)."""


@dataclass(frozen=True)
class Record:
    id: str
    xcon: bytes | None
    plan: dict[str, Any] | None
    applied: dict[str, Any] | None
    pending: dict[str, Any] | None


#: a row as kept in memory and journaled: (xcon, plan, applied, pending), the last three packed
_Row = tuple[bytes | None, bytes | None, bytes | None, bytes | None]


def _pack(value: Any) -> bytes | None:
    return None if value is None else msgpack.packb(value, use_bin_type=True)


def _unpack(blob: bytes | None) -> Any:
    return None if blob is None else msgpack.unpackb(blob, raw=False)


def _record(xcon_id: str, row: _Row | None) -> bytes:
    """The framed journal record of a row's new state (None: the row is deleted)."""
    payload = msgpack.packb([xcon_id, None if row is None else list(row)], use_bin_type=True)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _size(xcon_id: str, row: _Row) -> int:
    """About the size of a row's record (for deciding when to compact)."""
    return _FRAME.size + 16 + len(xcon_id) + sum(len(f) for f in row if f is not None)


def _replay(data: bytes) -> tuple[dict[str, _Row], int]:
    """The rows a journal's bytes describe, and how many bytes of it are whole records (a
    record cut short or damaged ends the journal: nothing after it is trusted)."""
    rows: dict[str, _Row] = {}
    offset = 0
    while offset + _FRAME.size <= len(data):
        size, crc = _FRAME.unpack_from(data, offset)
        start, end = offset + _FRAME.size, offset + _FRAME.size + size
        payload = data[start:end]
        if end > len(data) or zlib.crc32(payload) != crc:
            break
        try:
            xcon_id, row = msgpack.unpackb(payload, raw=False)
        except (ValueError, msgpack.ExtraData):
            break
        if row is None:
            rows.pop(xcon_id, None)
        else:
            rows[xcon_id] = (row[0], row[1], row[2], row[3])
        offset = end
    return rows, offset


def _to_record(xcon_id: str, row: _Row) -> Record:
    return Record(xcon_id, row[0], _unpack(row[1]), _unpack(row[2]), _unpack(row[3]))


def read_records(directory: str) -> list[Record]:
    """The rows of a state directory as its journal says now, without opening it for writing
    (for tools and tests; safe while a forwarder is using it)."""
    try:
        with open(os.path.join(directory, JOURNAL), "rb") as f:
            rows, _ = _replay(f.read())
    except FileNotFoundError:
        return []
    return [_to_record(i, row) for i, row in rows.items()]


class Store:
    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory
        self.path = os.path.join(directory, JOURNAL)
        self._lock = threading.Lock()
        self._lock_fd = _lock_directory(directory)
        try:
            self._rows = self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise
        #: about the bytes of the live rows' records (what a compacted journal would hold)
        self._live = sum(_size(i, row) for i, row in self._rows.items())

    def _open(self) -> dict[str, _Row]:
        """Read the journal (importing a legacy SQLite store first), drop a damaged tail, and
        open it for appending."""
        leftover = self.path + ".new"
        if os.path.exists(leftover):  # a compaction was interrupted: the old journal is whole
            os.unlink(leftover)
        legacy = os.path.join(self.directory, LEGACY)
        if not os.path.exists(self.path) and os.path.exists(legacy):
            self._import(legacy)
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        rows, whole = _replay(data)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if whole < len(data):
            log.warning(
                "state journal %s: %d bytes of an unfinished write at its end dropped",
                self.path,
                len(data) - whole,
            )
            os.ftruncate(self._fd, whole)
        os.lseek(self._fd, whole, os.SEEK_SET)
        self._size = whole
        return rows

    def _import(self, legacy: str) -> None:
        """Write the rows of an earlier version's SQLite store as a new journal."""
        db = sqlite3.connect(legacy)
        try:
            found = db.execute("SELECT id, xcon, plan, applied, pending FROM xcons").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the earlier state store {legacy}: {exc}") from None
        finally:
            db.close()
        rows = {r[0]: (r[1], r[2], r[3], r[4]) for r in found}
        _write_durably(self.path, b"".join(_record(i, row) for i, row in rows.items()))
        os.rename(legacy, legacy + ".imported")
        log.info("state store: %d cross-connects imported from %s", len(rows), legacy)

    # --- reads (from memory) ------------------------------------------------------------------

    def load(self) -> list[Record]:
        with self._lock:
            rows = list(self._rows.items())
        return [_to_record(i, row) for i, row in rows]

    def has(self, xcon_id: str) -> bool:
        """True when ``xcon_id`` has a row (committed or pending)."""
        return xcon_id in self._rows

    def count(self) -> int:
        """Rows (committed or pending): the live cross-connects, for the max_cross_connects cap."""
        return len(self._rows)

    def get(self, xcon_id: str) -> Record | None:
        row = self._rows.get(xcon_id)
        return None if row is None else _to_record(xcon_id, row)

    # --- writes (one journal record each) -----------------------------------------------------

    def begin_apply(self, xcon_id: str, plan: dict[str, Any]) -> None:
        """Before building ``plan``: remember that it may (partly) exist from now on."""
        pending = _pack({"op": "apply", "plan": plan})
        with self._lock:
            xcon, old_plan, applied, _ = self._rows.get(xcon_id, (None, None, None, None))
            self._write(xcon_id, (xcon, old_plan, applied, pending))

    def begin_close(self, xcon_id: str) -> None:
        """Before removing the applied record of ``xcon_id``."""
        self._change(xcon_id, 3, _pack({"op": "close"}))

    def commit(
        self, xcon_id: str, xcon: bytes, plan: dict[str, Any], applied: dict[str, Any]
    ) -> None:
        """The cross-connect is built as ``applied``; nothing is pending any more."""
        with self._lock:
            self._write(xcon_id, (xcon, _pack(plan), _pack(applied), None))

    def set_xcon(self, xcon_id: str, xcon: bytes) -> None:
        """Replace what nsmd sees of ``xcon_id`` (e.g. an end marked DOWN)."""
        self._change(xcon_id, 0, xcon)

    def clear_pending(self, xcon_id: str) -> None:
        self._change(xcon_id, 3, None)

    def delete(self, xcon_id: str) -> None:
        """The data plane holds nothing of ``xcon_id`` any more."""
        with self._lock:
            if xcon_id in self._rows:
                self._write(xcon_id, None)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _change(self, xcon_id: str, field: int, value: bytes | None) -> None:
        """Set one field of an existing row (no row: nothing to change)."""
        with self._lock:
            row = self._rows.get(xcon_id)
            if row is not None:
                new = list(row)
                new[field] = value
                self._write(xcon_id, (new[0], new[1], new[2], new[3]))

    def _write(self, xcon_id: str, row: _Row | None) -> None:
        """Journal a row's new state and keep it in memory (the lock is held)."""
        if self._fd < 0:
            raise StoreError("the state store is closed")
        record = _record(xcon_id, row)
        _write_all(self._fd, record)
        self._size += len(record)
        old = self._rows.get(xcon_id)
        if old is not None:
            self._live -= _size(xcon_id, old)
        if row is None:
            self._rows.pop(xcon_id, None)
        else:
            self._rows[xcon_id] = row
            self._live += _size(xcon_id, row)
        if self._size > max(COMPACT_MIN, COMPACT_FACTOR * self._live):
            self._compact()

    def _compact(self) -> None:
        """Rewrite the journal as one record per live row (the lock is held)."""
        data = b"".join(_record(i, row) for i, row in self._rows.items())
        _write_durably(self.path, data)
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        os.lseek(fd, len(data), os.SEEK_SET)
        os.close(self._fd)
        self._fd, self._size, self._live = fd, len(data), len(data)
        log.debug("state journal compacted to %d bytes (%d rows)", len(data), len(self._rows))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_durably(path: str, data: bytes) -> None:
    """Replace ``path`` by a file holding ``data``: written to ``path.new``, fsynced, renamed
    over ``path``, the directory fsynced, so a crash leaves either file whole."""
    new = path + ".new"
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(new, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _lock_directory(directory: str) -> int:
    """Hold ``xcons.lock`` exclusively for as long as the fd is open: one forwarder per state
    directory (two would each believe they own every cross-connect in it)."""
    fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(
            f"the state directory {directory} is in use by another forwarder "
            "(each forwarder needs its own FORWARDER_NAME or state_dir)"
        ) from None
    return fd

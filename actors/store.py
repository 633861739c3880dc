"""Store: every cross-connect as applied, in SQLite (WAL), so a restart forgets nothing.

Used by ConnectionActors (each only for its own id) and by the Supervisor's reconcile phase.
Thread-safe (one connection, one lock); every method is one transaction.

A row holds the cross-connect as last answered to nsmd (``xcon``, protobuf bytes), the driver
``plan`` it came from and the ``applied`` record the driver returned (everything needed to remove
it), plus an optional ``pending`` operation written *before* touching the data plane:

- ``{"op": "apply", "plan": P}``: a Request is building plan P (over the applied one, if any);
- ``{"op": "close"}``: a Close is removing the applied record.

So a crash at any point leaves a row that says exactly what may exist in the kernel: reconcile
finishes a pending Close, sweeps what an unanswered Request may have left (then keeps the
previous applied state, if any), and checks every committed row against the data plane.
A row without ``applied`` only exists while its first Request is pending.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgpack

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS xcons (
    id      TEXT PRIMARY KEY,
    xcon    BLOB,
    plan    BLOB,
    applied BLOB,
    pending BLOB
)
"""


#: SQLite's page cache, KiB (its default is 2000)
CACHE_KIB = 256


@dataclass(frozen=True)
class Record:
    id: str
    xcon: bytes | None
    plan: dict[str, Any] | None
    applied: dict[str, Any] | None
    pending: dict[str, Any] | None


def _pack(value: Any) -> bytes | None:
    return None if value is None else msgpack.packb(value, use_bin_type=True)


def _unpack(blob: bytes | None) -> Any:
    return None if blob is None else msgpack.unpackb(blob, raw=False)


class Store:
    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, "xcons.sqlite3")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit is in the WAL, in the kernel's page cache, before it returns, so it
        # survives the forwarder being killed (kill -9, OOM) at any point; only a crash of the
        # whole node may lose the last commits, and the pods and their interfaces do not survive
        # that either. FULL would fsync every commit (about 0.6 ms each here, two per Request).
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The page cache holds what was read or written, up to 2 MiB by default: about 1 KiB of
        # the forwarder's memory per row. The table is small and hot in the kernel's page cache
        # (not part of our memory): a B-tree lookup there costs a few microseconds.
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.execute(SCHEMA)
        #: ids that have a row (kept with every write), so "is there a row?" costs no query
        self._ids = {r[0] for r in self._db.execute("SELECT id FROM xcons")}

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def load(self) -> list[Record]:
        with self._tx() as db:
            rows = db.execute("SELECT id, xcon, plan, applied, pending FROM xcons").fetchall()
        return [Record(r[0], r[1], _unpack(r[2]), _unpack(r[3]), _unpack(r[4])) for r in rows]

    def has(self, xcon_id: str) -> bool:
        """True when ``xcon_id`` has a row (committed or pending)."""
        return xcon_id in self._ids

    def count(self) -> int:
        """Rows (committed or pending): the live cross-connects, for the max_cross_connects cap."""
        return len(self._ids)

    def get(self, xcon_id: str) -> Record | None:
        with self._tx() as db:
            r = db.execute(
                "SELECT id, xcon, plan, applied, pending FROM xcons WHERE id = ?", (xcon_id,)
            ).fetchone()
        return (
            None if r is None else Record(r[0], r[1], _unpack(r[2]), _unpack(r[3]), _unpack(r[4]))
        )

    def begin_apply(self, xcon_id: str, plan: dict[str, Any]) -> None:
        """Before building ``plan``: remember that it may (partly) exist from now on."""
        pending = _pack({"op": "apply", "plan": plan})
        with self._tx() as db:
            db.execute(
                "INSERT INTO xcons (id, pending) VALUES (?, ?) "
                "ON CONFLICT(id) DO UPDATE SET pending = excluded.pending",
                (xcon_id, pending),
            )
            self._ids.add(xcon_id)

    def begin_close(self, xcon_id: str) -> None:
        """Before removing the applied record of ``xcon_id``."""
        with self._tx() as db:
            db.execute(
                "UPDATE xcons SET pending = ? WHERE id = ?",
                (_pack({"op": "close"}), xcon_id),
            )

    def commit(
        self, xcon_id: str, xcon: bytes, plan: dict[str, Any], applied: dict[str, Any]
    ) -> None:
        """The cross-connect is built as ``applied``; nothing is pending any more."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO xcons (id, xcon, plan, applied, pending) VALUES (?, ?, ?, ?, NULL) "
                "ON CONFLICT(id) DO UPDATE SET xcon = excluded.xcon, plan = excluded.plan, "
                "applied = excluded.applied, pending = NULL",
                (xcon_id, xcon, _pack(plan), _pack(applied)),
            )
            self._ids.add(xcon_id)

    def set_xcon(self, xcon_id: str, xcon: bytes) -> None:
        """Replace what nsmd sees of ``xcon_id`` (e.g. an end marked DOWN)."""
        with self._tx() as db:
            db.execute("UPDATE xcons SET xcon = ? WHERE id = ?", (xcon, xcon_id))

    def clear_pending(self, xcon_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE xcons SET pending = NULL WHERE id = ?", (xcon_id,))

    def delete(self, xcon_id: str) -> None:
        """The data plane holds nothing of ``xcon_id`` any more."""
        with self._tx() as db:
            db.execute("DELETE FROM xcons WHERE id = ?", (xcon_id,))
            self._ids.discard(xcon_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()

"""The Store's journal (actors/store.py): rows survive a reopen and a kill -9, a write cut short
is dropped, compaction keeps every row, one forwarder per directory, an earlier version's SQLite
store is imported."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nsm_forwarder.actors.store as store_module
from nsm_forwarder.actors.store import JOURNAL, LEGACY, Record, Store, StoreError, read_records

PLAN = {"id": "x", "kind": "local", "mtu": 1500}
APPLIED = {"id": "x", "kind": "local", "src": {"inode": 1, "name": "a", "ifindex": 7}}


def rows(directory: Path) -> dict[str, Record]:
    return {r.id: r for r in read_records(str(directory))}


def test_every_change_is_kept_across_a_reopen(tmp_path: Path) -> None:
    s = Store(str(tmp_path))
    s.begin_apply("new", PLAN)  # a first Request, interrupted
    s.begin_apply("a", PLAN)
    s.commit("a", b"xcon-a", PLAN, APPLIED)
    s.commit("b", b"xcon-b", PLAN, APPLIED)
    s.set_xcon("b", b"xcon-b-down")
    s.begin_close("b")  # a Close, interrupted
    s.commit("c", b"xcon-c", PLAN, APPLIED)
    s.begin_apply("c", {**PLAN, "mtu": 9000})
    s.clear_pending("c")  # a failed update
    s.commit("d", b"xcon-d", PLAN, APPLIED)
    s.delete("d")
    s.delete("never-there")
    s.set_xcon("never-there", b"x")  # changes of a missing row change nothing
    expected = {r.id: r for r in s.load()}
    assert (s.count(), s.has("a"), s.has("d")) == (4, True, False)
    s.close()

    assert expected == {
        "new": Record("new", None, None, None, {"op": "apply", "plan": PLAN}),
        "a": Record("a", b"xcon-a", PLAN, APPLIED, None),
        "b": Record("b", b"xcon-b-down", PLAN, APPLIED, {"op": "close"}),
        "c": Record("c", b"xcon-c", PLAN, APPLIED, None),
    }
    assert rows(tmp_path) == expected  # as a reader sees the journal
    again = Store(str(tmp_path))
    try:
        assert {r.id: r for r in again.load()} == expected
        assert again.get("b") == expected["b"] and again.get("d") is None
    finally:
        again.close()


def test_a_write_cut_short_is_dropped_and_writing_goes_on(tmp_path: Path) -> None:
    s = Store(str(tmp_path))
    s.commit("a", b"xcon-a", PLAN, APPLIED)
    s.close()
    journal = tmp_path / JOURNAL
    whole = journal.read_bytes()
    s = Store(str(tmp_path))
    s.commit("b", b"xcon-b", PLAN, APPLIED)
    s.close()
    cut = journal.read_bytes()[: len(whole) + 11]  # "b" cut in the middle of its record
    journal.write_bytes(cut)
    assert set(rows(tmp_path)) == {"a"}

    s = Store(str(tmp_path))
    try:
        assert [r.id for r in s.load()] == ["a"]
        assert journal.stat().st_size == len(whole)  # the partial record is gone
        s.commit("c", b"xcon-c", PLAN, APPLIED)  # appended after "a", not after garbage
    finally:
        s.close()
    assert set(rows(tmp_path)) == {"a", "c"}


def test_a_damaged_record_ends_the_journal(tmp_path: Path) -> None:
    s = Store(str(tmp_path))
    s.commit("a", b"xcon-a", PLAN, APPLIED)
    s.commit("b", b"xcon-b", PLAN, APPLIED)
    s.close()
    journal = tmp_path / JOURNAL
    data = bytearray(journal.read_bytes())
    data[-3] ^= 0xFF  # a bit flipped in the last record: its checksum fails
    journal.write_bytes(bytes(data))
    assert set(rows(tmp_path)) == {"a"}


def test_compaction_keeps_every_row_and_bounds_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "COMPACT_MIN", 8 << 10)
    s = Store(str(tmp_path))
    try:
        for i in range(20):
            s.commit(f"keep-{i}", b"x" * 100, PLAN, APPLIED)
        for round_ in range(200):  # churn: many records, few live rows
            s.begin_apply("churn", PLAN)
            s.commit("churn", b"y" * 100, PLAN, APPLIED)
            s.delete("churn")
            s.set_xcon("keep-0", f"round {round_}".encode())
        size = (tmp_path / JOURNAL).stat().st_size
        assert size < 4 * (8 << 10)  # compacted (uncompacted: far more than 100 KiB)
        assert not (tmp_path / (JOURNAL + ".new")).exists()
        expected = {r.id: r for r in s.load()}
    finally:
        s.close()
    assert len(expected) == 20 and expected["keep-0"].xcon == b"round 199"
    assert rows(tmp_path) == expected


def test_an_interrupted_compaction_leaves_the_old_journal(tmp_path: Path) -> None:
    s = Store(str(tmp_path))
    s.commit("a", b"xcon-a", PLAN, APPLIED)
    s.close()
    (tmp_path / (JOURNAL + ".new")).write_bytes(b"half a compaction")
    s = Store(str(tmp_path))
    try:
        assert [r.id for r in s.load()] == ["a"]
        assert not (tmp_path / (JOURNAL + ".new")).exists()
    finally:
        s.close()


def test_one_forwarder_per_state_directory(tmp_path: Path) -> None:
    s = Store(str(tmp_path))
    try:
        with pytest.raises(StoreError, match="in use by another forwarder"):
            Store(str(tmp_path))
    finally:
        s.close()
    Store(str(tmp_path)).close()  # free again once closed


#: the table of the SQLite store of earlier versions
LEGACY_SCHEMA = """
CREATE TABLE xcons (id TEXT PRIMARY KEY, xcon BLOB, plan BLOB, applied BLOB, pending BLOB)
"""


def test_a_sqlite_store_of_an_earlier_version_is_imported(tmp_path: Path) -> None:
    import msgpack

    db = sqlite3.connect(tmp_path / LEGACY)
    db.execute(LEGACY_SCHEMA)
    db.execute(
        "INSERT INTO xcons VALUES (?, ?, ?, ?, NULL)",
        ("old-1", b"xcon-1", msgpack.packb(PLAN), msgpack.packb(APPLIED)),
    )
    db.execute(
        "INSERT INTO xcons VALUES (?, NULL, NULL, NULL, ?)",
        ("old-2", msgpack.packb({"op": "apply", "plan": PLAN})),
    )
    db.commit()
    db.close()
    s = Store(str(tmp_path))
    try:
        assert {r.id: r for r in s.load()} == {
            "old-1": Record("old-1", b"xcon-1", PLAN, APPLIED, None),
            "old-2": Record("old-2", None, None, None, {"op": "apply", "plan": PLAN}),
        }
    finally:
        s.close()
    assert not (tmp_path / LEGACY).exists() and (tmp_path / (LEGACY + ".imported")).exists()


WRITER = """
import sys
from nsm_forwarder.actors.store import Store
s = Store(sys.argv[1])
plan = {"id": "x", "kind": "local", "pad": "p" * 300}
i = 0
while True:
    s.begin_apply(f"x{i}", plan)
    s.commit(f"x{i}", b"xcon" * 60, plan, {"id": f"x{i}"})
    print(i, flush=True)  # x{i} is committed
    i += 1
"""


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        last = -1
        while last < 2000 and time.monotonic() < deadline:
            last = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    found = rows(tmp_path)
    committed = {i for i in found if found[i].applied is not None}
    assert {f"x{i}" for i in range(last + 1)} <= committed
    s = Store(str(tmp_path))  # and it opens (a record the kill cut short is dropped)
    s.close()

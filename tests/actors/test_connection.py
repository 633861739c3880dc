"""ConnectionActor (actors/connection.py) against a scripted worker pool: a Close that fails
retriably is finished by the actor itself; one that fails otherwise is left pending."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nsm_forwarder.actors.connection import ConnectionActor
from nsm_forwarder.actors.messages import ApplyXconn, CloseXconn, Message, XconnDeleted
from nsm_forwarder.actors.runtime import Envelope, Link, ask
from nsm_forwarder.actors.store import Store
from nsm_forwarder.drivers.errors import DriverError, ForwarderError, WorkerLost
from nsm_forwarder.proto import crossconnect_pb2

XCON = crossconnect_pb2.CrossConnect(id="fc", payload="IP").SerializeToString()


def plan_of(xcon: crossconnect_pb2.CrossConnect) -> dict[str, Any]:
    end = {"inode": 4026531840, "name": "nsm0"}
    return {"id": xcon.id, "kind": "local", "src": end, "dst": end}


class ScriptedPool:
    """``apply`` answers at once; each ``remove`` raises the next of ``failures`` while any
    are left, then succeeds."""

    def __init__(self, failures: list[ForwarderError]) -> None:
        self.failures = list(failures)
        self.removes = 0

    async def acall(self, method: str, arg: Any) -> Any:
        if method == "apply":
            return {"id": arg["id"], "kind": "local"}
        assert method == "remove"
        self.removes += 1
        if self.failures:
            raise self.failures.pop(0)
        return None


class Told:
    """The Monitor's end of a Link: what it was told."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def tell(self, envelope: Envelope) -> None:
        self.messages.append(envelope.message)

    def is_alive(self) -> bool:
        return True


def run_close(tmp_path: Path, failures: list[ForwarderError]) -> tuple[Store, Told, ScriptedPool]:
    store, told, pool = Store(str(tmp_path)), Told(), ScriptedPool(failures)

    async def go() -> None:
        actor = ConnectionActor(
            "fc",
            pool,  # type: ignore[arg-type]
            Link("monitor", told),  # type: ignore[arg-type]
            store,
            plan_of,
        )
        await ask(actor, ApplyXconn(xcon=XCON))
        with pytest.raises(ForwarderError) as failed:
            await ask(actor, CloseXconn(xcon=XCON))
        assert failed.value.code == failures[0].code
        quiet = 0.0  # the actor finishes it by itself, or leaves it: then it stays idle
        while quiet < 0.5:
            await asyncio.sleep(0.05)
            quiet = quiet + 0.05 if actor.idle() else 0.0

    asyncio.run(asyncio.wait_for(go(), 20))
    return store, told, pool


def test_a_close_whose_worker_was_lost_is_finished_by_the_actor(tmp_path: Path) -> None:
    """The remove fails twice (the Close's own retry included) with a lost worker, as when a
    worker died while the kernel was deleting: the Close answers UNAVAILABLE, then the actor
    removes what is left, deletes the row and reports the DELETE."""
    store, told, pool = run_close(tmp_path, [WorkerLost("lost"), WorkerLost("lost again")])
    try:
        assert pool.removes == 3
        assert not store.has("fc")
        assert [type(m) for m in told.messages][-1] is XconnDeleted
    finally:
        store.close()


def test_a_close_that_failed_otherwise_stays_pending(tmp_path: Path) -> None:
    """A failure that is not retriable is not retried: the row stays, pending its Close (for
    the next Close, or reconcile), and no DELETE is reported."""
    store, told, pool = run_close(tmp_path, [DriverError("refused")])
    try:
        assert pool.removes == 1
        row = store.get("fc")
        assert row is not None and row.pending == {"op": "close"}
        assert XconnDeleted not in [type(m) for m in told.messages]
    finally:
        store.close()

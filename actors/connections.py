"""Connections: routes messages to the ConnectionActor of each cross-connect id and supervises
those actors (one-for-one).

Accepts:  ``ask(id, message)`` from the asyncio loop (the Frontend, the periodic checks).
Sends:    the message to the id's ConnectionActor (started on demand, from its parked state, its
          Store row or nothing); once nothing is in flight for an id, takes its actor's state
          and drops the actor.
Threads:  the asyncio loop of the main process, where the actors run too (loop_actor.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from nsm_forwarder.actors.batcher import RemoveBatcher
from nsm_forwarder.actors.connection import ConnectionActor, Planner
from nsm_forwarder.actors.faults import Injector
from nsm_forwarder.actors.runtime import Link, ask
from nsm_forwarder.actors.store import Record, Store
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.drivers.errors import OperationTimeout

log = logging.getLogger(__name__)


class Connections:
    """id -> ConnectionActor, owned by the asyncio loop (so routing needs no lock).

    An actor exists only while its id has work: once nothing is in flight for it, the actor is
    dropped (its id "parked"), and the next message for that id starts an actor from the
    Store's row, which holds exactly the dropped actor's state. Actors live on the loop, so a
    node with thousands of cross-connects has one Store row and an id per cross-connect, and no
    thread for any of them.

    Supervision of ConnectionActors lives here (one-for-one): an actor found dead is restarted
    from its Store row; an actor that does not answer within ``timeout`` is abandoned (it may
    no longer touch the data plane, Store or Monitor), the caller gets DEADLINE_EXCEEDED, and
    the next message for that id starts a replacement from the Store. Both count as restarts.
    """

    def __init__(
        self,
        pool: WorkerPool,
        monitor: Link,
        store: Store,
        planner: Planner,
        *,
        timeout: float = 60.0,
        faults: Injector | None = None,
        on_restart: Callable[[str], None] = lambda kind: None,
        remover: RemoveBatcher | None = None,
    ) -> None:
        self.pool = pool
        self.remover = remover
        self.monitor = monitor
        self.store = store
        self.planner = planner
        self.timeout = timeout
        self.faults = faults or Injector("connection", ())
        self.on_restart = on_restart
        self._actors: dict[str, tuple[ConnectionActor, threading.Event]] = {}
        self._in_flight: dict[str, int] = {}
        #: one lock per id, shared by every actor that serves it (see connection._Guarded)
        self._fences: dict[str, asyncio.Lock] = {}
        self._abandoned_ids: set[str] = set()
        #: idle ids with an applied cross-connect and no actor: the next message starts one
        #: from the Store's row (which is its last actor's state; a pending mark that actor
        #: left, e.g. of a failed Close, stays for the next Close or a restart to settle)
        self._parked: set[str] = set()

    def _start(self, xcon_id: str, record: Record | None) -> ConnectionActor:
        abandoned = threading.Event()
        ref = ConnectionActor(
            xcon_id,
            self.pool,
            self.monitor,
            self.store,
            self.planner,
            record,
            faults=self.faults,
            abandoned=abandoned,
            fence=self._fences.setdefault(xcon_id, asyncio.Lock()),
            remover=self.remover,
        )
        self._actors[xcon_id] = (ref, abandoned)
        return ref

    def restore(self, record: Record) -> None:
        """Keep a cross-connect restored from the Store (before serving); its actor starts
        with its first message."""
        if record.pending is None and record.applied is not None and record.xcon is not None:
            self._parked.add(record.id)
        else:
            self._start(record.id, record)

    async def ask(self, xcon_id: str, message: Any) -> Any:
        entry = self._actors.get(xcon_id)
        if entry is None or not entry[0].is_alive():
            record: Record | None = None
            if entry is not None:
                log.warning(
                    "the actor of %s died; restarting it from the Store",
                    xcon_id,
                    extra={"xcon_id": xcon_id},
                )
                self.on_restart("connection")
                self._parked.discard(xcon_id)
                record = self.store.get(xcon_id)
            elif xcon_id in self._parked:
                self._parked.discard(xcon_id)
                row = self.store.get(xcon_id)
                if row is not None:
                    record = Record(xcon_id, row.xcon, row.plan, row.applied, None)
            elif self.store.has(xcon_id):  # e.g. a pending row a failed Request left
                record = self.store.get(xcon_id)
            ref = self._start(xcon_id, record)
        else:
            ref = entry[0]
        self._in_flight[xcon_id] = self._in_flight.get(xcon_id, 0) + 1
        try:
            async with asyncio.timeout(self.timeout):
                return await ask(ref, message)
        except TimeoutError:
            self._abandon(xcon_id, ref)
            raise OperationTimeout(
                f"cross-connect {xcon_id} did not finish within {self.timeout:.0f} s; "
                "its actor was replaced"
            ) from None
        finally:
            self._in_flight[xcon_id] -= 1
            if self._in_flight[xcon_id] == 0:
                self._reap(xcon_id, ref)

    def _abandon(self, xcon_id: str, ref: ConnectionActor) -> None:
        entry = self._actors.get(xcon_id)
        if entry is None or entry[0] is not ref:
            return
        log.error(
            "the actor of %s is not answering; replacing it", xcon_id, extra={"xcon_id": xcon_id}
        )
        self._abandoned_ids.add(xcon_id)
        entry[1].set()
        del self._actors[xcon_id]
        ref.stop()
        self.on_restart("connection")

    def _reap(self, xcon_id: str, ref: ConnectionActor) -> None:
        """Drop the actor of an id that has nothing in flight, keeping its state (if any).

        Every message to an actor comes through :meth:`ask`, but an ask whose client gave up
        (cancelled) leaves its message queued or running: the actor is dropped only once it is
        idle, so its state is final (else it stays until a later ask for the id finds it idle).
        A dead actor (it crashed) is kept, so that the next message restarts the id from the
        Store."""
        entry = self._actors.get(xcon_id)
        if entry is None or entry[0] is not ref or not ref.is_alive() or not ref.idle():
            return
        del self._actors[xcon_id]
        del self._in_flight[xcon_id]
        if ref.applied is not None:
            self._parked.add(xcon_id)
        elif xcon_id not in self._abandoned_ids:  # else a predecessor may hold the fence
            self._fences.pop(xcon_id, None)
        ref.stop()

    def stop(self) -> None:
        for ref, _ in self._actors.values():
            ref.stop()
        self._actors.clear()

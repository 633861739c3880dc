"""Connections: routes messages to the ConnectionActor of each cross-connect id and supervises
those actors (one-for-one).

Accepts:  ``ask(id, message)`` from the asyncio loop (the Frontend, the periodic checks).
Sends:    the message to the id's ConnectionActor (started on demand, from its parked state, its
          Store row or nothing); Park to an actor once nothing is in flight for its id.
Threads:  the asyncio loop of the main process (so routing needs no lock); actors run on their
          own pykka threads while they have work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import msgpack
import pykka

from nsm_forwarder.actors.batcher import RemoveBatcher
from nsm_forwarder.actors.connection import ConnectionActor, Planner
from nsm_forwarder.actors.faults import Injector
from nsm_forwarder.actors.messages import Park
from nsm_forwarder.actors.runtime import Link, ask
from nsm_forwarder.actors.store import Record, Store
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.drivers.errors import ForwarderError, OperationTimeout

log = logging.getLogger(__name__)


class Connections:
    """id -> ConnectionActor, owned by the asyncio loop (so routing needs no lock).

    An actor runs only while its id has work: once nothing is in flight for it, it hands over
    its state (``Park``) and is stopped; the state is kept here, packed, and the next message
    for that id starts an actor from it. So a node with thousands of cross-connects has a few
    actor threads, not one per cross-connect.

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
        self._actors: dict[str, tuple[pykka.ActorRef[Any], threading.Event]] = {}
        self._in_flight: dict[str, int] = {}
        #: messages sent to each id's actor so far: a Park answer is its final state only if
        #: nothing was sent after it (an ask cancelled by its client leaves its message queued)
        self._sent: dict[str, int] = {}
        #: one lock per id, shared by every actor that serves it (see connection._Guarded)
        self._fences: dict[str, threading.Lock] = {}
        self._abandoned_ids: set[str] = set()
        #: id -> msgpack of the Park state of an idle cross-connect
        self._parked: dict[str, bytes] = {}

    def _start(self, xcon_id: str, record: Record | None) -> pykka.ActorRef[Any]:
        abandoned = threading.Event()
        ref = ConnectionActor.start(
            xcon_id,
            self.pool,
            self.monitor,
            self.store,
            self.planner,
            record,
            faults=self.faults,
            abandoned=abandoned,
            fence=self._fences.setdefault(xcon_id, threading.Lock()),
            remover=self.remover,
        )
        self._actors[xcon_id] = (ref, abandoned)
        return ref

    def restore(self, record: Record) -> None:
        """Keep a cross-connect restored from the Store (before serving); its actor starts
        with its first message."""
        if record.pending is None and record.applied is not None and record.xcon is not None:
            self._park(
                record.id, {"xcon": record.xcon, "plan": record.plan, "applied": record.applied}
            )
        else:
            self._start(record.id, record)

    def _park(self, xcon_id: str, state: dict[str, Any]) -> None:
        self._parked[xcon_id] = msgpack.packb(state, use_bin_type=True)

    async def ask(self, xcon_id: str, message: Any) -> Any:
        entry = self._actors.get(xcon_id)
        if entry is None or not entry[0].is_alive():
            record: Record | None = None
            if entry is not None:
                log.warning("the actor of %s died; restarting it from the Store", xcon_id)
                self.on_restart("connection")
                self._parked.pop(xcon_id, None)
                record = await asyncio.to_thread(self.store.get, xcon_id)
            elif xcon_id in self._parked:
                state = msgpack.unpackb(self._parked.pop(xcon_id), raw=False)
                record = Record(xcon_id, state["xcon"], state["plan"], state["applied"], None)
            elif self.store.has(xcon_id):  # e.g. a pending row a failed Request left
                record = await asyncio.to_thread(self.store.get, xcon_id)
            again = self._actors.get(xcon_id)
            if again is not None and again is not entry and again[0].is_alive():
                ref = again[0]  # another ask started it while this one read the Store
            else:
                ref = self._start(xcon_id, record)
        else:
            ref = entry[0]
        self._in_flight[xcon_id] = self._in_flight.get(xcon_id, 0) + 1
        self._sent[xcon_id] = self._sent.get(xcon_id, 0) + 1
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
                await self._reap(xcon_id, ref)

    def _abandon(self, xcon_id: str, ref: pykka.ActorRef[Any]) -> None:
        entry = self._actors.get(xcon_id)
        if entry is None or entry[0] is not ref:
            return
        log.error("the actor of %s is not answering; replacing it", xcon_id)
        self._abandoned_ids.add(xcon_id)
        entry[1].set()
        del self._actors[xcon_id]
        ref.stop(block=False)
        self.on_restart("connection")

    async def _reap(self, xcon_id: str, ref: pykka.ActorRef[Any]) -> None:
        """Stop the actor of an id that has nothing queued, keeping its state (if any)."""
        sent = self._sent.get(xcon_id)
        try:
            async with asyncio.timeout(self.timeout):
                state = await ask(ref, Park())
        except (pykka.ActorDeadError, TimeoutError, ForwarderError):
            return
        entry = self._actors.get(xcon_id)
        idle = self._in_flight.get(xcon_id) == 0 and self._sent.get(xcon_id) == sent
        if idle and entry is not None and entry[0] is ref:
            del self._actors[xcon_id]
            del self._in_flight[xcon_id]
            self._sent.pop(xcon_id, None)
            if state is not None:
                self._park(xcon_id, state)
            elif xcon_id not in self._abandoned_ids:  # else a predecessor may hold the fence
                self._fences.pop(xcon_id, None)
            ref.stop(block=False)

    def stop(self) -> None:
        for ref, _ in self._actors.values():
            ref.stop(block=False)
        self._actors.clear()

"""ConnectionActor: owns one cross-connect id.

Accepts:  ApplyXconn -> XconnApplied (ask); CloseXconn -> XconnClosed (ask); MarkDown -> bool
          (ask, from the pod liveness check); QueryIdle -> bool.
Sends:    WorkerCall (apply / remove) through the WorkerPool; XconnUpdated / XconnDeleted to
          the Monitor; rows to the Store.
Guarantees: one message at a time, in arrival order, for its id (different ids run in parallel
          in their own actors). Every change is written to the Store *before* the data plane is
          touched (pending) and committed before the reply, so a crash never loses or duplicates
          a cross-connect. A Request for a known id is an update: afterwards only the new
          interfaces exist; if the new ones cannot be built, the old ones are restored. A failed
          Request leaves nothing behind (the driver unwinds its own steps; if the worker died
          mid-apply, the leftovers of the plan are removed and the apply is retried once). Close
          removes what was applied (the stored cross-connect, not the caller's copy), deletes the
          row and then emits DELETE; closing an unknown id succeeds and sweeps any tagged
          leftovers the request names.
Threads:  its own pykka thread; blocks only on worker calls and the Store; never touches asyncio.
Failure:  errors go back to the asker as ForwarderError (mapped to gRPC statuses by the
          Frontend); the actor keeps its last consistent state and goes on.
Owns:     the applied record, plan and cross-connect bytes of its id; nothing else.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pykka

from nsm_forwarder.actors.messages import (
    ApplyXconn,
    CloseXconn,
    MarkDown,
    Message,
    QueryIdle,
    XconnApplied,
    XconnClosed,
    XconnDeleted,
    XconnUpdated,
)
from nsm_forwarder.actors.runtime import BaseActor, tell
from nsm_forwarder.actors.store import Record, Store
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.drivers.base import Applied, Plan
from nsm_forwarder.drivers.errors import ForwarderError, InvalidRequest
from nsm_forwarder.drivers.plan import describe, plan_from_xcon
from nsm_forwarder.proto import connection_pb2, crossconnect_pb2

log = logging.getLogger(__name__)


def with_down(data: bytes, sides: list[str]) -> bytes | None:
    """The cross-connect with those ends' state set DOWN, or None if they already were."""
    xcon = crossconnect_pb2.CrossConnect.FromString(data)
    changed = False
    for side in sides:
        conn = getattr(xcon, side)
        if conn.state != connection_pb2.DOWN:
            conn.state = connection_pb2.DOWN
            changed = True
    return xcon.SerializeToString() if changed else None


class ConnectionActor(BaseActor):
    def __init__(
        self,
        xcon_id: str,
        pool: WorkerPool,
        monitor: pykka.ActorRef[Any],
        store: Store,
        mtu: int,
        restored: Record | None = None,
    ) -> None:
        super().__init__()
        self.xcon_id = xcon_id
        self.pool = pool
        self.monitor = monitor
        self.store = store
        self.mtu = mtu
        self.applied: Applied | None = restored.applied if restored else None
        self.plan: Plan | None = restored.plan if restored else None
        self.xcon: bytes | None = restored.xcon if restored else None

    def handle(self, message: Message) -> Any:
        if isinstance(message, ApplyXconn):
            return self._timed("request", self._apply_xconn, message.xcon)
        if isinstance(message, CloseXconn):
            return self._timed("close", self._close_xconn, message.xcon)
        if isinstance(message, MarkDown):
            return self._mark_down(message.sides)
        if isinstance(message, QueryIdle):
            return self.applied is None
        raise TypeError(f"ConnectionActor cannot handle {message.TAG}")

    def _timed(self, what: str, fn: Any, data: bytes) -> Any:
        start = time.perf_counter()
        try:
            result, detail = fn(data)
        except ForwarderError as exc:
            log.info(
                "%s id=%s failed in %.1f ms: %s: %s",
                what,
                self.xcon_id,
                (time.perf_counter() - start) * 1000,
                exc.code,
                exc.message,
            )
            raise
        log.info(
            "%s id=%s %s ok in %.1f ms",
            what,
            self.xcon_id,
            detail,
            (time.perf_counter() - start) * 1000,
        )
        return result

    # --- Request ------------------------------------------------------------------------------

    def _apply_xconn(self, data: bytes) -> tuple[XconnApplied, str]:
        xcon = crossconnect_pb2.CrossConnect.FromString(data)
        plan = plan_from_xcon(xcon, mtu=self.mtu)
        self.store.begin_apply(self.xcon_id, plan)
        if self.applied is not None and self.plan is not None:
            old_plan, old_xcon = self.plan, self.xcon
            try:
                self._call("remove", self.applied)
            except ForwarderError:
                self.store.clear_pending(self.xcon_id)
                raise
            self.applied = None
            try:
                applied = self._build(plan)
            except ForwarderError:
                self._restore(old_plan, old_xcon)
                raise
            detail = f"updated to {describe(plan)}"
        else:
            try:
                applied = self._build(plan)
            except ForwarderError:
                self.store.delete(self.xcon_id)
                raise
            detail = describe(plan)
        self.store.commit(self.xcon_id, data, plan, applied)
        self.applied, self.plan, self.xcon = applied, plan, data
        tell(self.monitor, XconnUpdated(xcon=data))
        return XconnApplied(xcon=data), detail

    def _build(self, plan: Plan) -> Applied:
        """Apply a plan; if the worker died mid-way, sweep its leftovers and try once more."""
        try:
            result: Applied = self.pool.call("apply", plan)
            return result
        except ForwarderError as exc:
            if not exc.retriable:
                raise
            log.warning("apply id=%s: %s; cleaning up and retrying once", self.xcon_id, exc)
        self._call("remove", plan)
        result = self.pool.call("apply", plan)
        return result

    def _restore(self, old_plan: Plan, old_xcon: bytes | None) -> None:
        """After a failed update: put the previous cross-connect back, or report it gone."""
        try:
            self.applied = self._build(old_plan)
            self.plan = old_plan
            if old_xcon is not None:
                self.store.commit(self.xcon_id, old_xcon, old_plan, self.applied)
            log.warning("update id=%s failed; previous cross-connect restored", self.xcon_id)
        except ForwarderError as exc:
            log.error(
                "update id=%s failed and the previous cross-connect could not be restored: %s",
                self.xcon_id,
                exc,
            )
            self.applied = self.plan = self.xcon = None
            self.store.delete(self.xcon_id)
            if old_xcon is not None:
                tell(self.monitor, XconnDeleted(xcon=old_xcon))

    def _call(self, method: str, arg: Any) -> Any:
        """A worker call retried once when the worker was lost."""
        try:
            return self.pool.call(method, arg)
        except ForwarderError as exc:
            if not exc.retriable:
                raise
            log.warning("%s id=%s: %s; retrying once", method, self.xcon_id, exc)
            return self.pool.call(method, arg)

    # --- Close --------------------------------------------------------------------------------

    def _close_xconn(self, data: bytes) -> tuple[XconnClosed, str]:
        if self.applied is None:
            self._sweep(data)
            return XconnClosed(id=self.xcon_id, known=False), "(unknown id)"
        self.store.begin_close(self.xcon_id)
        self._call("remove", self.applied)
        self.store.delete(self.xcon_id)
        stored = self.xcon or data
        detail = describe(self.plan) if self.plan else ""
        self.applied = self.plan = self.xcon = None
        tell(self.monitor, XconnDeleted(xcon=stored))
        return XconnClosed(id=self.xcon_id, known=True), detail

    def _sweep(self, data: bytes) -> None:
        """Close of an id we do not hold: remove tagged leftovers the request names, if any."""
        try:
            plan = plan_from_xcon(crossconnect_pb2.CrossConnect.FromString(data), mtu=self.mtu)
        except InvalidRequest:
            return
        self._call("remove", plan)

    # --- pod death ----------------------------------------------------------------------------

    def _mark_down(self, sides: list[str]) -> bool:
        if self.xcon is None:
            return False
        changed = with_down(self.xcon, sides)
        if changed is None:
            return False
        self.xcon = changed
        self.store.set_xcon(self.xcon_id, changed)
        log.info("pod gone: id=%s %s DOWN", self.xcon_id, " and ".join(sides))
        tell(self.monitor, XconnUpdated(xcon=changed))
        return True

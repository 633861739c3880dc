"""ConnectionActor: owns one cross-connect id.

Accepts:  ApplyXconn -> XconnApplied (ask); CloseXconn -> XconnClosed (ask); QueryIdle -> bool.
Sends:    WorkerCall (apply / remove) through the WorkerPool; XconnUpdated / XconnDeleted to
          the Monitor.
Guarantees: one message at a time, in arrival order, for its id (different ids run in parallel
          in their own actors). A Request for a known id is an update: afterwards only the new
          interfaces exist; if the new ones cannot be built, the old ones are restored. A failed
          Request leaves nothing behind (the driver unwinds its own steps; if the worker died
          mid-apply, the tagged leftovers are removed and the apply is retried once). Close
          removes what was applied (the stored cross-connect, not the caller's copy) and then
          emits DELETE; closing an unknown id succeeds and sweeps any tagged leftovers of it.
Threads:  its own pykka thread; blocks only on worker calls; never touches asyncio.
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
    Message,
    QueryIdle,
    XconnApplied,
    XconnClosed,
    XconnDeleted,
    XconnUpdated,
)
from nsm_forwarder.actors.runtime import BaseActor, tell
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.drivers.base import Applied, Plan
from nsm_forwarder.drivers.errors import ForwarderError, InvalidRequest
from nsm_forwarder.drivers.plan import describe, plan_from_xcon
from nsm_forwarder.proto import crossconnect_pb2

log = logging.getLogger(__name__)


class ConnectionActor(BaseActor):
    def __init__(self, xcon_id: str, pool: WorkerPool, monitor: pykka.ActorRef[Any], mtu: int):
        super().__init__()
        self.xcon_id = xcon_id
        self.pool = pool
        self.monitor = monitor
        self.mtu = mtu
        self.applied: Applied | None = None
        self.plan: Plan | None = None
        self.xcon: bytes | None = None

    def handle(self, message: Message) -> Any:
        if isinstance(message, ApplyXconn):
            return self._timed("request", self._apply_xconn, message.xcon)
        if isinstance(message, CloseXconn):
            return self._timed("close", self._close_xconn, message.xcon)
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
        if self.applied is not None and self.plan is not None:
            old_plan, old_xcon = self.plan, self.xcon
            self._call("remove", self.applied)
            self.applied = None
            try:
                applied = self._build(plan)
            except ForwarderError:
                self._restore(old_plan, old_xcon)
                raise
            detail = f"updated to {describe(plan)}"
        else:
            applied = self._build(plan)
            detail = describe(plan)
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
            log.warning("update id=%s failed; previous cross-connect restored", self.xcon_id)
        except ForwarderError as exc:
            log.error(
                "update id=%s failed and the previous cross-connect could not be restored: %s",
                self.xcon_id,
                exc,
            )
            self.applied = self.plan = self.xcon = None
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
        self._call("remove", self.applied)
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

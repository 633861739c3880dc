"""ConnectionActor: owns one cross-connect id.

Accepts:  ApplyXconn -> XconnApplied (ask); CloseXconn -> XconnClosed (ask); MarkDown -> bool
          (ask, from the pod liveness check); Rebuild -> bool (ask, after a data-plane
          restart). When it is idle its owner drops it; its successor starts from the Store's
          row, which then holds exactly this actor's state.
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
          leftovers the request names. A Request whose gRPC deadline (``ApplyXconn.deadline``)
          has passed is not started, and one whose deadline passes while it is being applied is
          rolled back instead of committed (a new id: removed, no row; an update: the previous
          cross-connect put back), so a caller that saw DEADLINE_EXCEEDED finds nothing changed.
          A Close that fails with a retriable error (its worker was lost, maybe after the
          kernel had begun removing) is finished by the actor itself (FinishClose, told to
          itself with a growing pause), so no cross-connect stays reported whose interfaces
          are gone; only past the last attempt is it left to the next Close or a restart.
Threads:  a loop actor (loop_actor.py): runs on the main process's asyncio loop; awaits worker
          calls (the other ids' actors run meanwhile); its Store writes are single journal
          records (one write each) on the loop.
Failure:  errors go back to the asker as ForwarderError (mapped to gRPC statuses by the
          Frontend); the actor keeps its last consistent state and goes on.
Owns:     the applied record, plan and cross-connect bytes of its id; nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from nsm_forwarder.actors.batcher import RemoveBatcher
from nsm_forwarder.actors.faults import CRASH, HANG, Injector
from nsm_forwarder.actors.logs import XCON_ID
from nsm_forwarder.actors.loop_actor import LoopActor, hang
from nsm_forwarder.actors.messages import (
    ApplyXconn,
    CloseXconn,
    FinishClose,
    MarkDown,
    Message,
    Rebuild,
    XconnApplied,
    XconnClosed,
    XconnDeleted,
    XconnUpdated,
)
from nsm_forwarder.actors.reconcile import Report, settle_pending
from nsm_forwarder.actors.runtime import Envelope, Link
from nsm_forwarder.actors.store import Record, Store
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.actors.xcons import with_down
from nsm_forwarder.drivers.base import Applied, Plan
from nsm_forwarder.drivers.errors import ForwarderError, InvalidRequest, WorkerLost
from nsm_forwarder.drivers.plan import KERNEL_OFFER, Offer, describe, plan_from_xcon
from nsm_forwarder.proto import crossconnect_pb2

log = logging.getLogger(__name__)


#: Validates a cross-connect and builds its driver plan: ``plan_from_xcon`` with this
#: forwarder's MTU settings bound (see :func:`planner`).
Planner = Callable[[crossconnect_pb2.CrossConnect], Plan]


def planner(mtu: int, egress_mtu: int, offer: Offer = KERNEL_OFFER) -> Planner:
    """The Planner of a forwarder: local veths get ``mtu``; tunnels the egress MTU minus their
    encapsulation overhead; only the mechanisms of ``offer`` (the driver's) are accepted."""
    return functools.partial(plan_from_xcon, mtu=mtu, egress_mtu=egress_mtu, offer=offer)


#: tries to finish a Close that failed retriably, and the pause before the first (doubling)
FINISH_CLOSE_ATTEMPTS = 6
FINISH_CLOSE_PAUSE = 0.1


def _passed(deadline: float) -> bool:
    return bool(deadline) and time.monotonic() >= deadline


def _rolled_back(what: str) -> ForwarderError:
    return ForwarderError(
        f"the Request's deadline passed while it was applied; rolled back ({what})",
        code="DEADLINE_EXCEEDED",
    )


class _Guard:
    """What one ConnectionActor may still do once it has been abandoned: nothing.

    Once an actor has been abandoned (it hung and was replaced) it may not touch the worker
    pool, the Store or the Monitor again. Its worker calls hold the id's ``fence``, a lock shared
    by all actors that ever serve this id, so a call it had in flight when it was abandoned (a
    worker call is bounded by the operation timeout) finishes before its replacement makes its
    first one. So a late wake-up can never undo what the replacement did."""

    def __init__(self, abandoned: threading.Event, fence: asyncio.Lock, xcon_id: str) -> None:
        self._abandoned = abandoned
        self._fence = fence
        self._xcon_id = xcon_id

    def check(self, what: str) -> None:
        if self._abandoned.is_set():
            raise WorkerLost(f"the actor of {self._xcon_id} was replaced; {what} not run")

    async def fenced(self, what: str, work: Callable[[], Any]) -> Any:
        """Await ``work()`` holding the fence, if this actor has not been abandoned."""
        async with self._fence:
            self.check(what)
            return await work()


class _Checked:
    """The Store or the Monitor link as seen by one ConnectionActor: every call first checks
    that the actor has not been abandoned (these calls are synchronous: no fence needed)."""

    def __init__(self, target: Any, guard: _Guard) -> None:
        self._target = target
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        def checked(*args: Any, **kwargs: Any) -> Any:
            self._guard.check(name)
            return method(*args, **kwargs)

        return checked


class ConnectionActor(LoopActor):
    def __init__(
        self,
        xcon_id: str,
        pool: WorkerPool,
        monitor: Link,
        store: Store,
        planner: Planner,
        restored: Record | None = None,
        *,
        faults: Injector | None = None,
        abandoned: threading.Event | None = None,
        fence: asyncio.Lock | None = None,
        remover: RemoveBatcher | None = None,
    ) -> None:
        super().__init__()
        self.xcon_id = xcon_id
        self.guard = _Guard(abandoned or threading.Event(), fence or asyncio.Lock(), xcon_id)
        self._pool = pool
        self._raw_store = store
        self.monitor: Link = _Checked(monitor, self.guard)  # type: ignore[assignment]
        self.store: Store = _Checked(store, self.guard)  # type: ignore[assignment]
        #: where a Close's remove goes: batched with other Closes' (see batcher.py)
        self.remover = remover
        self.planner = planner
        self.faults = faults or Injector("connection", ())
        self.restored = restored
        self._rebuild = False
        self.applied: Applied | None = None
        self.plan: Plan | None = None
        self.xcon: bytes | None = None

    async def run_mailbox(self) -> None:
        # the mailbox's task serves only this id: every log record it writes carries the id
        # (and so does every worker call's meta)
        XCON_ID.set(self.xcon_id)
        await super().run_mailbox()

    async def _once(self, method: str, arg: Any) -> Any:
        """One worker call, holding the fence."""
        return await self.guard.fenced(method, lambda: self._pool.acall(method, arg))

    async def on_start(self) -> None:
        try:
            await self._take_over()
        except ForwarderError as exc:
            log.warning(
                "id=%s: taking over its stored state failed (%s); retrying later", self.xcon_id, exc
            )

    async def _take_over(self) -> None:
        """Take over the Store's row of this id (after a restart), finishing or undoing an
        operation that the previous actor left pending. An interrupted update may have removed
        the previous interfaces (they share names with the new ones), so those are rebuilt.
        Until this has succeeded, every message first tries it again."""
        rec = self.restored
        if rec is None:
            return
        if rec.pending is not None:
            self._rebuild = rec.pending.get("op") == "apply" and rec.applied is not None
            pending = rec

            async def settle() -> Record | None:  # rare (after a crash): blocking, in a thread
                return await asyncio.to_thread(
                    settle_pending, self._raw_store, self._pool, pending, Report()
                )

            rec = self.restored = await self.guard.fenced("settle", settle)
        if rec is not None and self._rebuild and rec.plan is not None and rec.xcon is not None:
            await self._call("remove", rec.applied)
            applied = await self._build(rec.plan)
            self.store.commit(self.xcon_id, rec.xcon, rec.plan, applied)
            rec = Record(rec.id, rec.xcon, rec.plan, applied, None)
            log.info("id=%s: previous cross-connect rebuilt after an interrupted update", rec.id)
        self._rebuild = False
        if rec is not None and rec.applied is not None:
            self.applied, self.plan, self.xcon = rec.applied, rec.plan, rec.xcon
        self.restored = None

    async def handle(self, message: Message) -> Any:
        action = await self.faults.acheck(message.TAG)
        if action is CRASH:
            self.crash()
            raise WorkerLost(f"the actor of cross-connect {self.xcon_id} crashed (injected)")
        if action is HANG:
            await hang()
        if self.restored is not None:
            await self._take_over()
        if isinstance(message, ApplyXconn):
            apply = functools.partial(self._apply_xconn, deadline=message.deadline)
            return await self._timed("request", apply, message.xcon)
        if isinstance(message, CloseXconn):
            try:
                return await self._timed("close", self._close_xconn, message.xcon)
            except ForwarderError as exc:
                if exc.retriable and self.applied is not None and self.is_alive():
                    self.tell(Envelope(FinishClose(attempt=1)))
                raise
        if isinstance(message, MarkDown):
            return self._mark_down(message.sides)
        if isinstance(message, Rebuild):
            return await self._rebuild_all(message.why)
        if isinstance(message, FinishClose):
            return await self._finish_close(message.attempt)
        raise TypeError(f"ConnectionActor cannot handle {message.TAG}")

    async def _timed(self, what: str, fn: Any, data: bytes) -> Any:
        start = time.perf_counter()
        try:
            result, detail = await fn(data)
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

    async def _apply_xconn(self, data: bytes, deadline: float = 0.0) -> tuple[XconnApplied, str]:
        if _passed(deadline):
            raise ForwarderError(
                "the Request's deadline passed before it started; nothing was changed",
                code="DEADLINE_EXCEEDED",
            )
        xcon = crossconnect_pb2.CrossConnect.FromString(data)
        plan = self.planner(xcon)
        self.store.begin_apply(self.xcon_id, plan)
        if self.applied is not None and self.plan is not None:
            old_plan, old_xcon = self.plan, self.xcon
            try:
                await self._call("remove", self.applied)
            except ForwarderError:
                self.store.clear_pending(self.xcon_id)
                raise
            self.applied = None
            try:
                applied = await self._build(plan)
            except ForwarderError:
                await self._restore(old_plan, old_xcon)
                raise
            if _passed(deadline):
                await self._undo_late_update(plan, applied, old_plan, old_xcon)
            detail = f"updated to {describe(plan)}"
        else:
            try:
                applied = await self._build(plan)
            except ForwarderError:
                await self._forget(plan)
                raise
            if _passed(deadline):
                await self._forget(plan)
                raise _rolled_back("removed")
            detail = describe(plan)
        self.store.commit(self.xcon_id, data, plan, applied)
        self.applied, self.plan, self.xcon = applied, plan, data
        self.monitor.tell(XconnUpdated(xcon=data))
        return XconnApplied(xcon=data), detail

    async def _undo_late_update(
        self, plan: Plan, applied: Applied, old_plan: Plan, old_xcon: bytes | None
    ) -> None:
        """The update is built but its caller's deadline has passed: put the previous
        cross-connect back and raise DEADLINE_EXCEEDED. Should the new one not come off, it is
        kept and committed (so Store and data plane agree), as if the deadline had not passed."""
        try:
            await self._call("remove", applied)
        except ForwarderError as exc:
            log.warning(
                "update id=%s: deadline passed, but the new interfaces could not be removed (%s); "
                "keeping them",
                self.xcon_id,
                exc,
            )
            return
        await self._restore(old_plan, old_xcon)
        raise _rolled_back("the previous cross-connect put back")

    async def _build(self, plan: Plan) -> Applied:
        """Apply a plan; if the worker died mid-way, sweep its leftovers and try once more."""
        try:
            result: Applied = await self._once("apply", plan)
            return result
        except ForwarderError as exc:
            if not exc.retriable:
                raise
            log.warning("apply id=%s: %s; cleaning up and retrying once", self.xcon_id, exc)
        await self._call("remove", plan)
        result = await self._once("apply", plan)
        return result

    async def _restore(self, old_plan: Plan, old_xcon: bytes | None) -> None:
        """After a failed update: put the previous cross-connect back, or report it gone."""
        try:
            self.applied = await self._build(old_plan)
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
                self.monitor.tell(XconnDeleted(xcon=old_xcon))

    async def _call(self, method: str, arg: Any) -> Any:
        """A worker call retried once when the worker was lost."""
        return await self._retried(method, lambda: self._pool.acall(method, arg))

    async def _retried(self, what: str, work: Callable[[], Any]) -> Any:
        """``work()`` holding the fence, and once more if it failed retriably (the worker was
        lost)."""
        try:
            return await self.guard.fenced(what, work)
        except ForwarderError as exc:
            if not exc.retriable:
                raise
            log.warning("%s id=%s: %s; retrying once", what, self.xcon_id, exc)
            return await self.guard.fenced(what, work)

    # --- Close --------------------------------------------------------------------------------

    async def _forget(self, plan: Plan) -> None:
        """A first Request failed: make sure nothing of its plan is left (the driver unwinds
        its own steps, but not when its worker died), then drop the row. If even that fails,
        the pending row stays, for the next Request or Close of this id, or for reconcile."""
        try:
            await self._call("remove", plan)
        except ForwarderError as exc:
            log.warning("request id=%s: leftovers not removed yet (%s)", self.xcon_id, exc)
            return
        self.store.delete(self.xcon_id)

    async def _close_xconn(self, data: bytes) -> tuple[XconnClosed, str]:
        if self.applied is None:
            await self._sweep(data)
            self.store.delete(self.xcon_id)  # a pending row a failed Request may have left
            return XconnClosed(id=self.xcon_id, known=False), "(unknown id)"
        self.store.begin_close(self.xcon_id)
        await self._remove_closed(self.applied)
        self.store.delete(self.xcon_id)
        stored = self.xcon or data
        detail = describe(self.plan) if self.plan else ""
        self.applied = self.plan = self.xcon = None
        self.monitor.tell(XconnDeleted(xcon=stored))
        return XconnClosed(id=self.xcon_id, known=True), detail

    async def _remove_closed(self, applied: Applied) -> None:
        """Remove what a Close takes away, in a batch with other Closes' where there is a
        batcher; retried once when the worker was lost."""
        remover = self.remover
        if remover is None:
            await self._call("remove", applied)
        else:
            await self._retried("remove", lambda: remover.remove(applied))

    async def _finish_close(self, attempt: int) -> None:
        """FinishClose: after a pause, remove what is left of a Close that failed, and finish
        it; try again later while it fails retriably (up to :data:`FINISH_CLOSE_ATTEMPTS`)."""
        if self.applied is None:
            return  # a later message finished it (or built over it)
        await asyncio.sleep(FINISH_CLOSE_PAUSE * 2 ** (attempt - 1))
        try:
            await self._timed("close", self._close_xconn, self.xcon or b"")
            log.info("id=%s: the failed Close is finished", self.xcon_id)
        except ForwarderError as exc:
            if not exc.retriable:
                return  # the row stays pending: the next Close, or reconcile, finishes it
            if attempt < FINISH_CLOSE_ATTEMPTS:
                self.tell(Envelope(FinishClose(attempt=attempt + 1)))
            else:
                log.warning(
                    "id=%s: the failed Close could not be finished after %d attempts; it is "
                    "left to the next Close or the next start",
                    self.xcon_id,
                    attempt,
                )

    async def _sweep(self, data: bytes) -> None:
        """Close of an id we do not hold: remove tagged leftovers the request names, if any."""
        try:
            plan = self.planner(crossconnect_pb2.CrossConnect.FromString(data))
        except InvalidRequest:
            return
        await self._call("remove", plan)

    # --- data-plane restart -------------------------------------------------------------------

    async def _rebuild_all(self, why: str) -> bool:
        """Build the applied cross-connect again (what is left of it removed first) and report
        it with an UPDATE; if that fails, its ends go DOWN (nsmd heals or closes)."""
        if self.applied is None or self.plan is None or self.xcon is None:
            return False
        start = time.perf_counter()
        self.store.begin_apply(self.xcon_id, self.plan)
        try:
            await self._call("remove", self.applied)
            applied = await self._build(self.plan)
        except ForwarderError as exc:
            self.store.clear_pending(self.xcon_id)
            log.error("rebuild id=%s after %s failed: %s", self.xcon_id, why, exc)
            down = with_down(self.xcon, ["source", "destination"])
            if down is not None:
                self.xcon = down
                self.store.set_xcon(self.xcon_id, down)
                self.monitor.tell(XconnUpdated(xcon=down))
            return False
        self.store.commit(self.xcon_id, self.xcon, self.plan, applied)
        self.applied = applied
        self.monitor.tell(XconnUpdated(xcon=self.xcon))
        log.info(
            "rebuild id=%s after %s ok in %.1f ms",
            self.xcon_id,
            why,
            (time.perf_counter() - start) * 1000,
        )
        return True

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
        self.monitor.tell(XconnUpdated(xcon=changed))
        return True

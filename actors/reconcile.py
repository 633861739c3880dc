"""Reconcile: make the data plane and the Store agree at start-up, before serving.

Runs once, in the Supervisor's start-up, after the workers are up:

1. pending operations: a Close that was interrupted is finished (remove, delete the row); what an
   unanswered Request may have built is removed (the row goes, or falls back to the cross-connect
   applied before it);
2. committed cross-connects: when an end's pod namespace is gone, that end is marked DOWN (nsmd
   closes or heals on it); otherwise, if any of its tagged interfaces is missing, it is built
   again from its stored plan;
3. orphans: tagged interfaces whose id no row owns (e.g. the state file was deleted) are removed.

The restored records are returned for the ConnectionActors and the Monitor, so the
INITIAL_STATE_TRANSFER after a restart carries every cross-connect with all its parameters.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from nsm_forwarder.actors.store import Record, Store
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.actors.xcons import local_ends, with_down
from nsm_forwarder.drivers.errors import ForwarderError

log = logging.getLogger(__name__)

#: Tag side of each connection of a cross-connect.
TAG_SIDE = {"source": "src", "destination": "dst"}


@dataclass
class Report:
    restored: list[Record] = field(default_factory=list)
    finished_closes: int = 0
    swept_requests: int = 0
    reapplied: int = 0
    marked_down: int = 0
    orphans: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.restored)} cross-connects restored ({self.reapplied} rebuilt, "
            f"{self.marked_down} with a pod gone), {self.finished_closes} interrupted closes "
            f"finished, {self.swept_requests} interrupted requests swept, "
            f"{self.orphans} orphan interfaces removed"
        )


class _Steps:
    """Logs ``reconcile step N/3 <what>: <result> in X ms``."""

    def __init__(self) -> None:
        self.number = 0
        self.start = time.monotonic()

    def done(self, what: str, result: str) -> None:
        self.number += 1
        took = (time.monotonic() - self.start) * 1000
        log.info("reconcile step %d/3 %s: %s in %.0f ms", self.number, what, result, took)
        self.start = time.monotonic()


def reconcile(
    store: Store, pool: WorkerPool, live_inodes: set[int], scan_timeout: float | None = None
) -> Report:
    """``scan_timeout``: the deadline of the node-wide observe and sweep calls, which take
    longer than one operation on a busy node with many namespaces (default: the pool's)."""
    report = Report()
    steps = _Steps()
    committed = [settle_pending(store, pool, rec, report) for rec in store.load()]
    steps.done(
        "pending operations",
        f"{report.finished_closes} closes finished, {report.swept_requests} requests swept",
    )
    observed: list[dict[str, Any]] = pool.call("observe", timeout=scan_timeout)
    # a driver marks an interface whose data-plane half is missing as not complete; an entry
    # without a namespace (inode None: a VPP memif) stands for its end wherever the pod is
    present = {(o["id"], o["side"], o["inode"]) for o in observed if o.get("complete", True)}
    for rec in committed:
        if rec is not None:
            report.restored.append(_check(store, pool, rec, present, live_inodes, report))
    steps.done(
        "stored vs observed",
        f"{len(report.restored)} kept, {report.reapplied} rebuilt, "
        f"{report.marked_down} with a pod gone ({len(observed)} tagged interfaces seen)",
    )
    owned = {rec.id for rec in report.restored}
    orphans = [o for o in observed if o["id"] not in owned]
    for o in orphans:
        where = f"netns {o['inode']}" if o.get("inode") is not None else "the data plane"
        log.info("orphan %s (id %s) in %s: removing", o["name"], o["id"], where)
    if orphans:
        report.orphans = pool.call("sweep", orphans, timeout=scan_timeout)
    steps.done("orphans", f"{report.orphans} removed")
    return report


def settle_pending(store: Store, pool: WorkerPool, rec: Record, report: Report) -> Record | None:
    """Finish or undo an operation a crash interrupted; the committed record, or None."""
    pending = rec.pending
    if pending is None:
        return rec if rec.applied is not None else None
    if pending.get("op") == "close":
        if rec.applied is not None:
            pool.call("remove", rec.applied)
        store.delete(rec.id)
        report.finished_closes += 1
        log.info("id=%s: interrupted Close finished", rec.id)
        return None
    plan = pending.get("plan")
    if plan is not None:
        pool.call("remove", plan)
    report.swept_requests += 1
    if rec.applied is None or rec.xcon is None or rec.plan is None:
        store.delete(rec.id)
        log.info("id=%s: interrupted first Request swept", rec.id)
        return None
    store.clear_pending(rec.id)
    log.info("id=%s: interrupted update swept; keeping the previous cross-connect", rec.id)
    return Record(rec.id, rec.xcon, rec.plan, rec.applied, None)


def _check(
    store: Store,
    pool: WorkerPool,
    rec: Record,
    present: set[tuple[str, str, int]],
    live: set[int],
    report: Report,
) -> Record:
    assert rec.xcon is not None and rec.plan is not None and rec.applied is not None
    ends = local_ends(rec.xcon)
    gone = [side for side, inode in ends if inode not in live]
    if gone:
        report.marked_down += 1
        down = with_down(rec.xcon, gone)
        if down is None:
            return rec
        store.set_xcon(rec.id, down)
        log.info("id=%s: pod of %s gone; marked DOWN", rec.id, " and ".join(gone))
        return Record(rec.id, down, rec.plan, rec.applied, None)
    missing = [
        s
        for s, inode in ends
        if (rec.id, TAG_SIDE[s], inode) not in present
        and (rec.id, TAG_SIDE[s], None) not in present
    ]
    if not missing:
        return rec
    log.info("id=%s: interfaces of %s missing; rebuilding", rec.id, " and ".join(missing))
    try:
        pool.call("remove", rec.applied)
        applied = pool.call("apply", rec.plan)
    except ForwarderError as exc:
        log.error("id=%s: could not rebuild (%s); marking it DOWN", rec.id, exc)
        down = with_down(rec.xcon, [s for s, _ in ends]) or rec.xcon
        store.set_xcon(rec.id, down)
        report.marked_down += 1
        return Record(rec.id, down, rec.plan, rec.applied, None)
    store.commit(rec.id, rec.xcon, rec.plan, applied)
    report.reapplied += 1
    return Record(rec.id, rec.xcon, rec.plan, applied, None)

"""Load under kills: ~200 live cross-connects and a steady Request/Close stream while the
parts of one forwarder are killed, one at a time and repeatedly (issue 14, item 5).

One *round* is, for each actor target in ``ACTOR_TARGETS``: the forwarder is (re)started on its
state dir with a plan that crashes that actor once (fault plans are read at start only), the run
waits until the crash was injected, then SIGKILLs each worker process in turn (waiting for its
replacement), then ``kill -9``s the forwarder itself. The load goes on throughout, driven like
nsmd drives a forwarder: a Request that got a retriable status is retried until it is answered
OK (or, after too many tries, closed); a Close is retried until OK.

At the end (:meth:`KillRun.finish`) the invariants of tests/chaos/harness.py are checked for
every id, plus, from the kernel: 0 leaked interfaces (a tagged interface in the run's pods
whose id has no stored cross-connect, or a second set of interfaces for one id) and 0 lost
cross-connects (an id whose last OK answer was a Request, missing from the Store, the
monitor's initial state or the kernel).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from nsm_forwarder.drivers.base import set_owner
from nsm_forwarder.drivers.linux.sweep import tagged_links
from nsm_forwarder.proto import crossconnect_pb2
from tests.chaos.harness import CHAOS_ENV, RETRIABLE, Chaos
from tests.helpers import Pod, wait_until

#: The actors crashed by fault injection, one per phase (``driver`` crashes a worker process in
#: the middle of a data-plane call, which a SIGKILL from outside rarely hits).
ACTOR_TARGETS = ("connection", "monitor", "registrar", "frontend", "driver")
#: Every kill kind of the summary table, in its order.
KILL_KINDS = (*ACTOR_TARGETS, "worker", "forwarder")
#: ids 0..LIVE-1 stay up (apart from updates); the next CHURN ids are requested and closed.
LIVE = 200
CHURN = 24
#: The tag owner of a process that never called set_owner (this test process).
DEFAULT_OWNER = "nsm-forwarder"
#: Worker processes of the forwarder under kills.
WORKERS = 2
#: How many times the load client tries a Request before it gives up and closes the id.
REQUEST_TRIES = 40


def plan_for(target: str) -> str:
    """A plan that crashes ``target`` once, after letting a few messages through."""
    return f"{target}:crash:after=3:times=1"


@dataclass
class Report:
    """What one kill run saw; ``violations`` lists every broken promise."""

    kills: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)  # kills tried but not seen to happen
    #: our tagged interfaces found in the pods before the final Closes (2 per live id)
    tagged: int = 0
    leaks: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return not (self.violations or self.leaks or self.lost or self.missed)


class KillRun:
    """One forwarder (a started tests.conftest.Node, restarted in place) under load and kills."""

    def __init__(self, node: Any, a: Pod, b: Pod, seed: int = 1, live: int = LIVE) -> None:
        self.node = node
        self.chaos = Chaos(node, a, b, "kills", live + CHURN, seed)
        self.live = self.chaos.xcons[:live]
        self.churn = self.chaos.xcons[live:]
        self.report = Report()
        self.random = random.Random(seed)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.last_ok = time.monotonic()
        self.killed_forwarder = False

    # --- the client, as nsmd drives a forwarder -----------------------------------------------

    def request(self, xcon: crossconnect_pb2.CrossConnect) -> bool:
        """Request until OK; after REQUEST_TRIES retriable answers, close the id instead."""
        for attempt in range(REQUEST_TRIES):
            code = self.chaos.call("request", xcon)
            if code == grpc.StatusCode.OK:
                self.last_ok = time.monotonic()
                return True
            if code not in RETRIABLE:
                break
            time.sleep(min(0.05 * 2**attempt, 0.5))
        self.close(xcon)
        return False

    def close(self, xcon: crossconnect_pb2.CrossConnect) -> None:
        """Close until OK (nsmd keeps closing a connection it tore down)."""
        for attempt in range(4 * REQUEST_TRIES):
            code = self.chaos.call("close", xcon)
            if code == grpc.StatusCode.OK:
                self.last_ok = time.monotonic()
                return
            time.sleep(min(0.05 * 2**attempt, 0.5))
        self.report.violations.append(f"{xcon.id}: Close never answered OK")

    def establish(self) -> None:
        """Bring every live id up (a few calls in flight, as several nsmd clients would)."""
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(self.request, self.live))

    def start_load(self, streams: int = 3) -> None:
        """``streams`` threads: each Requests and Closes its share of the churn ids and now and
        then re-Requests (updates) a live one."""
        for n in range(streams):
            mine = self.churn[n::streams]
            rng = random.Random(self.random.random())
            thread = threading.Thread(target=self._stream, args=(mine, rng), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _stream(self, mine: list[crossconnect_pb2.CrossConnect], rng: random.Random) -> None:
        while not self.stopping.is_set():
            for xcon in mine:
                if self.stopping.is_set():
                    break
                if self.request(xcon):
                    time.sleep(rng.uniform(0.0, 0.05))
                    self.close(xcon)
                if rng.random() < 0.3:
                    self.request(rng.choice(self.live))

    def stop_load(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(120)
        self.threads.clear()

    # --- kills --------------------------------------------------------------------------------

    def _log_from(self, offset: int) -> str:
        return self.node.forwarder.log()[offset:]

    def _served_since(self, since: float, timeout: float) -> bool:
        """True once the load got an OK answer after ``since`` (the forwarder serves again)."""
        try:
            wait_until(lambda: self.last_ok > since, timeout, "an OK answer")
        except AssertionError:
            return False
        return True

    def restart_with(self, target: str | None) -> None:
        """Start the forwarder again on its state dir, with a plan crashing ``target`` (none
        if None). A forwarder kill counts as survived once the new process answers OK."""
        fwd = self.node.forwarder
        if target is None:
            fwd.env.pop("NSM_FORWARDER_FAULTS", None)
        else:
            fwd.env["NSM_FORWARDER_FAULTS"] = plan_for(target)
        started = time.monotonic()
        for _ in range(3):  # as Kubernetes restarts a pod that exited
            try:
                fwd.start()
                break
            except AssertionError as exc:
                last = str(exc).strip().splitlines()[-1:]
                self.report.violations.append(f"the forwarder did not start: {last}")
                fwd.kill()
        if not self.killed_forwarder:
            return
        self.killed_forwarder = False
        if self._served_since(started, 60):
            self.report.kills["forwarder"] += 1
        else:
            self.report.violations.append("no OK answer within 60 s of a forwarder restart")

    def kill_actor(self, target: str, offset: int) -> None:
        """Wait for the planned crash of ``target`` (log from ``offset``) and for recovery."""
        needle = f"injecting crash into {target}"
        try:
            wait_until(lambda: needle in self._log_from(offset), 20, needle)
        except AssertionError:
            self.report.missed[target] += 1
            return
        if self._served_since(time.monotonic(), 30):
            self.report.kills[target] += 1
        else:
            self.report.violations.append(f"no OK answer within 30 s after the {target} crash")

    def kill_workers(self) -> None:
        """SIGKILL each worker in turn; wait for its replacement before the next."""
        fwd = self.node.forwarder
        count = WORKERS  # not len(worker_pids()): a ``driver`` crash may have one missing now
        for _ in range(count):
            victim = self._kill_a_worker()
            if victim is None:
                self.report.missed["worker"] += 1
                continue

            def replaced(victim: int = victim) -> bool:
                now = fwd.worker_pids()
                return victim not in now and len(now) == count

            try:
                wait_until(replaced, 20, "a replacement worker")
            except AssertionError:
                self.report.violations.append(f"worker {victim} was not replaced within 20 s")
                continue
            if self._served_since(time.monotonic(), 30):
                self.report.kills["worker"] += 1
            else:
                self.report.violations.append("no OK answer within 30 s after a worker kill")

    def _kill_a_worker(self) -> int | None:
        """SIGKILL one live worker; its pid, or None if none could be found in 10 s (one may
        exit on its own meanwhile, by a ``driver`` crash: then pick another)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = self.node.forwarder.worker_pids()
            if pids:
                victim = self.random.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                return victim
            time.sleep(0.05)
        return None

    def kill_forwarder(self) -> None:
        """``kill -9`` the forwarder (no shutdown, no unregistration)."""
        self.node.forwarder.kill()
        self.killed_forwarder = True

    def round(self) -> None:
        """Every actor target once, each phase ending with worker and forwarder kills."""
        for target in ACTOR_TARGETS:
            offset = len(self.node.forwarder.log())
            self.restart_with(target)
            self.kill_actor(target, offset)
            self.kill_workers()
            self.kill_forwarder()

    # --- the end ------------------------------------------------------------------------------

    def finish(self) -> None:
        """Restart without faults, stop the load, check every promise, close everything."""
        if self.node.forwarder.proc.poll() is not None:
            self.restart_with(None)
        self.stop_load()
        self.report.leaks += self.leaks()
        chaos = self.chaos
        chaos.check()
        self.report.lost += self.lost()
        lost_ids = {p.split(":")[0] for p in self.report.lost}
        self.report.violations += [
            p for p in chaos.outcome.violations if p.split(":")[0] not in lost_ids
        ]
        chaos.outcome.violations.clear()
        chaos.close_all()
        self.report.violations += chaos.outcome.violations
        tagged, self.report.tagged = self.report.tagged, 0
        self.report.leaks += [f"after closing everything: {leak}" for leak in self.leaks()]
        if self.report.tagged:
            self.report.leaks.append(f"{self.report.tagged} tagged interfaces after closing")
        self.report.tagged = tagged

    def lost(self) -> list[str]:
        """Ids whose last OK answer was a Request that are missing anywhere: the Store, the
        monitor's initial state transfer or the kernel (both ends)."""
        chaos = self.chaos
        kernel, store, reported = chaos.kernel_ids(), chaos.store_ids(), chaos.reported_ids()
        missing = []
        for xcon_id, state in chaos.states.items():
            if state.uncertain or state.last_ok != "request":
                continue
            where = {"kernel": kernel, "store": store, "monitor": reported or set()}
            gone = [name for name, ids in where.items() if xcon_id not in ids]
            if gone:
                missing.append(f"{xcon_id}: requested OK but missing from {', '.join(gone)}")
        return missing

    def leaks(self) -> list[str]:
        """Tagged interfaces in the run's pods with no stored cross-connect, or more than one
        interface for one (id, side)."""
        pods = {self.chaos.a.inode, self.chaos.b.inode}
        stored = self.chaos.store_ids()
        found: list[str] = []
        sides: Counter[tuple[str, str]] = Counter()
        set_owner(self.node.forwarder.name)  # tags name their forwarder; read this one's
        try:
            tagged = tagged_links()
        finally:
            set_owner(DEFAULT_OWNER)
        for inode, link, xcon_id, side in tagged:
            if inode not in pods:
                continue  # another forwarder's (tests run side by side)
            sides[(xcon_id, side)] += 1
            self.report.tagged += 1
            if xcon_id not in stored:
                found.append(f"{link.name} ({xcon_id} {side}) has no stored cross-connect")
        found += [f"{i} {s}: {n} interfaces" for (i, s), n in sides.items() if n > 1]
        return found


def run_kills(
    make_node: Callable[..., Any],
    make_pod: Callable[[], Pod],
    *,
    rounds: int = 1,
    live: int = LIVE,
    seed: int = 1,
) -> tuple[Report, Chaos]:
    """Start a chaos forwarder, bring ``live`` cross-connects up, run the load through
    ``rounds`` rounds of kills, then check. Returns the report and the harness (RPC counts)."""
    node = make_node(**CHAOS_ENV, NSM_FORWARDER_WORKERS=str(WORKERS)).start()
    run = KillRun(node, make_pod(), make_pod(), seed, live)
    run.establish()
    run.start_load()
    try:
        node.forwarder.kill()  # every phase starts the forwarder with its own plan
        run.killed_forwarder = True
        for _ in range(rounds):
            run.round()
    finally:
        run.finish()
    return run.report, run.chaos

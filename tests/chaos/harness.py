"""Chaos harness: run a load of Requests and Closes against a real forwarder whose fault plan
makes one actor kind or the workers misbehave, then check the forwarder's promises.

Invariants checked after the load (``Outcome.violations`` lists every one that failed):
1. every RPC got OK or a retriable status (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED,
   RESOURCE_EXHAUSTED);
2. the kernel (interfaces in the pods), the Store and the forwarder's INITIAL_STATE_TRANSFER
   agree for every id, and agree with the last answer the client got: after an OK Request the
   cross-connect exists everywhere; after an OK Close it exists nowhere; after a failed
   (retriable) call either is fine, as long as all three agree;
3. the forwarder still serves (a new cross-connect can be made and closed) and is still
   registered with nsmd;
4. after closing everything, no interface is left in any pod.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2

from nsm_forwarder.actors.store import read_records
from nsm_forwarder.proto import crossconnect_pb2
from tests.helpers import Pod, numbered_xcon, wait_until

RETRIABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
#: Settings every chaos forwarder runs with: short timeouts so hangs are found quickly, and a
#: restart limit high enough that the load itself never trips it.
CHAOS_ENV = {
    "NSM_FORWARDER_OPERATION_TIMEOUT": "1s",
    "NSM_FORWARDER_MAX_RESTARTS": "1000",
    "NSM_FORWARDER_RESTART_WINDOW": "1s",
    "NSM_FORWARDER_LOG_LEVEL": "INFO",
}
RPC_TIMEOUT = 8.0


@dataclass
class Outcome:
    plan: str
    ops: int = 0
    ok: int = 0
    retriable: int = 0
    other: list[str] = field(default_factory=list)
    injected: int = 0
    #: answers by gRPC status name
    codes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return not self.violations


@dataclass
class IdState:
    """What the client knows about one id: the last OK answer and whether a call failed since."""

    last_ok: str = "close"  # "request" | "close"
    uncertain: bool = False


def xcon_for(index: int, a: Pod, b: Pod) -> crossconnect_pb2.CrossConnect:
    return numbered_xcon("chaos", index, a, b, 90, ends=("ch", "ch"))


class Chaos:
    """One scenario: ``node`` is a started tests.conftest.Node running the fault plan."""

    def __init__(self, node: Any, a: Pod, b: Pod, plan: str, ids: int, seed: int) -> None:
        self.node = node
        self.a, self.b = a, b
        self.outcome = Outcome(plan)
        self.xcons = [xcon_for(i, a, b) for i in range(ids)]
        self.states = {x.id: IdState() for x in self.xcons}
        self.random = random.Random(seed)
        self.lock = threading.Lock()

    # --- load ---------------------------------------------------------------------------------

    def call(self, kind: str, xcon: crossconnect_pb2.CrossConnect) -> grpc.StatusCode:
        stub = self.node.forwarder.stub()
        method: Callable[..., Any] = stub.Request if kind == "request" else stub.Close
        try:
            method(xcon, timeout=RPC_TIMEOUT)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
        with self.lock:
            self.outcome.ops += 1
            self.outcome.codes[code.name] += 1
            state = self.states.get(xcon.id)
            if code == grpc.StatusCode.OK:
                self.outcome.ok += 1
                if state is not None:
                    state.last_ok, state.uncertain = kind, False
            elif code in RETRIABLE:
                self.outcome.retriable += 1
                if state is not None:
                    state.uncertain = True
            else:
                self.outcome.other.append(f"{kind} {xcon.id}: {code.name}")
                if state is not None:
                    state.uncertain = True
        return code

    def load(self, ops_per_id: int, min_duration: float) -> None:
        """Each id gets at least ``ops_per_id`` calls, and calls go on for ``min_duration``
        seconds (some actors, like the Registrar, handle messages on a clock, not per call)."""
        until = time.monotonic() + min_duration

        def drive(xcon: crossconnect_pb2.CrossConnect, rng: random.Random) -> None:
            done = 0
            while done < ops_per_id or time.monotonic() < until:
                self.call("request" if rng.random() < 0.6 else "close", xcon)
                done += 1
                time.sleep(rng.uniform(0.02, 0.1))

        threads = [
            threading.Thread(target=drive, args=(x, random.Random(self.random.random())))
            for x in self.xcons
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # --- checks -------------------------------------------------------------------------------

    def kernel_ids(self) -> set[str]:
        """Ids whose interfaces exist in both pods."""
        both = set(self.a.links()) & set(self.b.links())
        return {x.id for x in self.xcons if x.source.mechanism.parameters["name"] in both}

    def kernel_partial(self) -> set[str]:
        one = set(self.a.links()) ^ set(self.b.links())
        return {x.id for x in self.xcons if x.source.mechanism.parameters["name"] in one}

    def store_ids(self) -> set[str]:
        """Ids with an applied record (a row may also carry a pending operation: a Close that
        failed stays pending until its actor finishes it (after a retriable failure), the next
        Close, or reconcile)."""
        state = os.path.join(self.node.workdir, "forwarder-state", self.node.forwarder.name)
        return {r.id for r in read_records(state) if r.applied is not None}

    def reported_ids(self) -> set[str] | None:
        for _ in range(12):  # a hung Monitor is replaced within seconds; subscribe again
            try:
                events = self.node.forwarder.xcon_monitor().MonitorCrossConnects(
                    empty_pb2.Empty(), timeout=RPC_TIMEOUT
                )
                first = next(events)
                events.cancel()
                return set(first.cross_connects)
            except grpc.RpcError:
                time.sleep(0.5)
        return None

    def disagreements(self) -> list[str]:
        kernel, store, reported = self.kernel_ids(), self.store_ids(), self.reported_ids()
        if reported is None:
            return ["MonitorCrossConnects did not answer"]
        problems = [f"{i}: only one end exists in the kernel" for i in self.kernel_partial()]
        for xcon in self.xcons:
            where = (xcon.id in kernel, xcon.id in store, xcon.id in reported)
            state = self.states[xcon.id]
            if len(set(where)) != 1:
                problems.append(f"{xcon.id}: kernel/store/reported disagree {where}")
            elif not state.uncertain and where[0] != (state.last_ok == "request"):
                problems.append(
                    f"{xcon.id}: last OK answer was {state.last_ok} but it "
                    f"{'exists' if where[0] else 'does not exist'}"
                )
        return problems

    def check(self, settle: float = 20.0) -> None:
        out = self.outcome
        out.violations += [f"non-retriable status: {o}" for o in out.other]
        deadline = time.monotonic() + settle
        problems = self.disagreements()
        while problems and time.monotonic() < deadline:  # hung calls may still be finishing
            time.sleep(0.5)
            problems = self.disagreements()
        out.violations += problems
        probe = xcon_for(250, self.a, self.b)
        if not self._retry("request", probe) or not self.a.ping("10.90.250.2"):
            out.violations.append("the forwarder no longer builds cross-connects")
        if not self._retry("close", probe):
            out.violations.append("the forwarder no longer closes cross-connects")
        name = self.node.forwarder.name
        try:
            wait_until(lambda: name in self.node.registrar.registered, 10, "registration")
        except AssertionError:
            out.violations.append("the forwarder is no longer registered with nsmd")

    def _retry(self, kind: str, xcon: crossconnect_pb2.CrossConnect, attempts: int = 6) -> bool:
        for _ in range(attempts):
            if self.call(kind, xcon) == grpc.StatusCode.OK:
                return True
            time.sleep(0.3)
        return False

    def close_all(self) -> None:
        for xcon in self.xcons:
            if not self._retry("close", xcon):
                self.outcome.violations.append(f"{xcon.id}: Close never succeeded")
        if self.a.links() or self.b.links():
            self.outcome.violations.append(
                f"interfaces left after closing everything: {self.a.links()} {self.b.links()}"
            )

    def count_injected(self) -> None:
        self.outcome.injected = self.node.forwarder.log().count("injecting ")


def run_scenario(
    make_node: Callable[..., Any],
    make_pod: Callable[[], Pod],
    plan: str,
    *,
    ids: int = 3,
    ops_per_id: int = 4,
    min_duration: float = 2.5,
    seed: int = 1,
) -> Outcome:
    node = make_node(NSM_FORWARDER_FAULTS=plan, **CHAOS_ENV).start()
    chaos = Chaos(node, make_pod(), make_pod(), plan, ids, seed)
    chaos.load(ops_per_id, min_duration)
    chaos.check()
    chaos.close_all()
    chaos.count_injected()
    return chaos.outcome

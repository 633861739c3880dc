"""The fault plan: parsing (pure) and the injector's decisions (no root)."""

from __future__ import annotations

import asyncio
import time

import pytest

from nsm_forwarder.actors.faults import CRASH, HANG, InjectedError, Injector
from nsm_forwarder.actors.restarts import Restarts
from nsm_forwarder.config.faults import Fault, FaultPlanError, parse_plan


def test_faults_parse_examples() -> None:
    plan = parse_plan(
        "worker-1:crash:after=3, registrar:hang; driver:delay=200ms "
        "connection:error=UNAVAILABLE:rate=0.1:times=4"
    )
    assert plan == (
        Fault("worker-1", "crash", after=3, seed=0),
        Fault("registrar", "hang", seed=1),
        Fault("driver", "delay", delay=0.2, seed=2),
        Fault("connection", "error", code="UNAVAILABLE", rate=0.1, times=4, seed=3),
    )
    assert parse_plan("") == ()
    assert str(plan[3]) == "connection:error=UNAVAILABLE:rate=0.1:times=4"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nobody:crash", "unknown target 'nobody'"),
        ("worker:explode", "unknown kind 'explode'"),
        ("worker:crash=1", "crash takes no value"),
        ("driver:delay=soon", "delay needs a duration"),
        ("connection:error=OOPS", "error needs a gRPC status name"),
        ("monitor:crash:after=x", "after must be a whole number"),
        ("monitor:crash:rate=2", "rate must be in (0, 1]"),
        ("monitor:crash:when=3", "unknown option 'when'"),
        ("monitor", "expected TARGET:KIND"),
    ],
)
def test_faults_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(FaultPlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_plan(text)


def test_faults_injector_after_and_times() -> None:
    injector = Injector("worker-2", parse_plan("worker:crash:after=2:times=1, monitor:hang"))
    assert [injector.check() for _ in range(5)] == [None, None, CRASH, None, None]
    assert injector.injected == 1
    assert Injector("monitor", parse_plan("monitor:hang")).check() is HANG
    assert not Injector("registrar", parse_plan("monitor:hang"))


def test_faults_injector_error_and_rate_are_reproducible() -> None:
    plan = parse_plan("connection:error=ABORTED:rate=0.5")
    outcomes = []
    for _ in range(2):
        injector = Injector("connection", plan)
        run = []
        for _ in range(40):
            try:
                injector.check()
                run.append(False)
            except InjectedError as exc:
                assert exc.code == "ABORTED" and exc.retriable
                run.append(True)
        outcomes.append(run)
    assert outcomes[0] == outcomes[1] and 5 < sum(outcomes[0]) < 35


def test_faults_delay_sync_and_async() -> None:
    injector = Injector("driver", parse_plan("driver:delay=50ms"))
    start = time.monotonic()
    assert injector.check() is None
    assert time.monotonic() - start >= 0.05
    assert asyncio.run(injector.acheck()) is None


def test_restarts_limit_fires_once() -> None:
    reasons: list[str] = []
    restarts = Restarts(2, 10.0, reasons.append)
    for kind in ("worker-0", "monitor", "worker-0", "registrar"):
        restarts.record(kind)
    assert len(reasons) == 1 and "3 restarts within 10 s (limit 2)" in reasons[0]
    assert restarts.by_kind == {"worker-0": 2, "monitor": 1, "registrar": 1}

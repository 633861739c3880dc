"""Quick chaos suite (CI): every actor kind and the workers get each fault kind while a load of
Requests and Closes runs; the forwarder's promises must hold (see harness.py). The long run is
``python -m tests.chaos.run``."""

from __future__ import annotations

import pytest

from nsm_forwarder.drivers.base import set_owner, tag
from tests.chaos.harness import CHAOS_ENV, run_scenario
from tests.chaos.kills import ACTOR_TARGETS, DEFAULT_OWNER, LIVE, KillRun, run_kills
from tests.conftest import needs_root
from tests.helpers import Pods

pytestmark = needs_root

TARGETS = ("frontend", "registrar", "monitor", "connection", "worker", "driver")
KINDS = ("crash", "hang", "delay=150ms", "error=UNAVAILABLE")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("target", TARGETS)
def test_chaos_quick(node_factory: type, pods: Pods, target: str, kind: str) -> None:
    plan = f"{target}:{kind}:after=2:times=2"
    outcome = run_scenario(node_factory, pods.make, plan)
    assert outcome.held, "\n".join(outcome.violations)
    assert outcome.injected >= 1, f"no fault was injected by {plan}"


def test_chaos_kills(node_factory: type, pods: Pods) -> None:
    """~200 live cross-connects and a Request/Close stream while every actor (fault plan), each
    worker (SIGKILL) and the forwarder (kill -9, restart on its state dir) die in turn: no
    leaked interface, no lost cross-connect, every answer OK or retriable. The long variant is
    ``python -m tests.chaos.run --kills ROUNDS``."""
    report, chaos = run_kills(node_factory, pods.make)
    problems = report.violations + report.leaks + report.lost
    problems += [f"{kind} kill not seen to happen" for kind in report.missed]
    assert not problems, "\n".join(problems)
    phases = len(ACTOR_TARGETS)  # one round: a phase per actor, 2 workers, then the forwarder
    assert report.kills == {
        **{target: 1 for target in ACTOR_TARGETS},
        "worker": 2 * phases,
        "forwarder": phases + 1,
    }, report.kills
    assert set(chaos.outcome.codes) <= {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED"}
    assert chaos.outcome.codes["OK"] > LIVE
    assert report.tagged >= 2 * LIVE  # the leak scan saw the live cross-connects' interfaces


def test_chaos_kill_checks_can_fail(node_factory: type, pods: Pods) -> None:
    """The end checks of the kill run see a tagged interface without a stored cross-connect,
    two interfaces for one end, and a cross-connect answered OK that does not exist."""
    run = KillRun(node_factory(**CHAOS_ENV).start(), pods.make(), pods.make(), live=2)
    a = run.chaos.a
    set_owner(run.node.forwarder.name)
    try:
        orphan, twin = tag("chaos-orphan", "src"), tag(run.live[0].id, "src")
    finally:
        set_owner(DEFAULT_OWNER)
    assert run.request(run.live[0])
    a.ip("link", "add", "orph0", "type", "veth", "peer", "twin0")
    for name, alias in (("orph0", orphan), ("twin0", twin)):
        a.ip("link", "set", name, "alias", alias)
    run.chaos.states[run.live[1].id].last_ok = "request"  # as if answered OK; never sent
    leaks, lost = run.leaks(), run.lost()
    assert any("orph0 (chaos-orphan src) has no stored cross-connect" in x for x in leaks), leaks
    assert f"{run.live[0].id} src: 2 interfaces" in leaks, leaks
    assert lost == [f"{run.live[1].id}: requested OK but missing from kernel, store, monitor"]

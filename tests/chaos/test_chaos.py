"""Quick chaos suite (CI): every actor kind and the workers get each fault kind while a load of
Requests and Closes runs; the forwarder's promises must hold (see harness.py). The long run is
``python -m tests.chaos.run``."""

from __future__ import annotations

import pytest

from tests.chaos.harness import run_scenario
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

"""Run the fuzz cases against a bed: ``fuzz(bed, examples, seed)`` draws ``examples`` cases
with hypothesis and checks each one (a failing case is shrunk to a small one and raised)."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as with_seed

from tests.fuzz.harness import Bed, Fuzzer
from tests.fuzz.strategies import Case, cases


def fuzz(bed: Bed, examples: int, seed: int | None = None, *, derandomize: bool = False) -> Fuzzer:
    """``derandomize``: the same cases every run (CI); else random, or from ``seed``."""
    fuzzer = Fuzzer(bed)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=cases(bed.world))
    def check(case: Case) -> None:
        fuzzer.run(case)

    if seed is not None:
        check = with_seed(seed)(check)
    check()
    return fuzzer

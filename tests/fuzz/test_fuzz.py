"""Property-based fuzzing over the real gRPC socket (see tests/fuzz/harness.py for what every
case must leave true). CI runs ``NSM_FUZZ_EXAMPLES`` cases (default 300, derandomized: the
same cases every run); the long variant is ``python -m tests.fuzz`` (10,000 cases, a table of
answers by status)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.fuzz.harness import Bed, fuzz_bed
from tests.fuzz.runner import fuzz
from tests.helpers import IS_ROOT, BackgroundLoop

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces)")

EXAMPLES = int(os.environ.get("NSM_FUZZ_EXAMPLES", "300"))


@pytest.fixture(scope="module")
def bed(bg_loop: BackgroundLoop) -> Iterator[Bed]:
    with fuzz_bed(bg_loop) as made:
        yield made


def test_fuzz_crossconnects_over_grpc(bed: Bed) -> None:
    fuzzer = fuzz(bed, EXAMPLES, derandomize=True)
    print(f"\n{fuzzer.table()}")
    assert fuzzer.cases >= EXAMPLES

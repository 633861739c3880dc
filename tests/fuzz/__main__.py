"""The long fuzz run: ``python -m tests.fuzz [--examples 10000] [--seed N]`` (as root).

Builds the same bed as the CI test (tests/fuzz/harness.py), draws ``--examples`` cases with
hypothesis (random each run unless ``--seed``), checks every one, and prints a table of the
answers by operation and status code. A broken promise stops the run with the case, shrunk.
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.fuzz.harness import Violation, fuzz_bed
from tests.fuzz.runner import fuzz
from tests.helpers import IS_ROOT, BackgroundLoop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz")
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if not IS_ROOT:
        print("tests.fuzz needs root (network namespaces)", file=sys.stderr)
        return 2
    loop = BackgroundLoop()
    start = time.monotonic()
    try:
        with fuzz_bed(loop) as bed:
            try:
                fuzzer = fuzz(bed, args.examples, seed=args.seed)
            except Violation as exc:
                print(f"FAILED: {exc}", file=sys.stderr)
                return 1
    finally:
        loop.close()
    print(fuzzer.table())
    print(f"{fuzzer.cases} cases in {time.monotonic() - start:.0f} s: every promise held")
    return 0


if __name__ == "__main__":
    sys.exit(main())

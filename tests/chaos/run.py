"""The long chaos runs, by hand (root): ``.venv/bin/python -m tests.chaos.run [--faults 100]``
or ``... --kills ROUNDS``.

With ``--kills``: the load-under-kills run of tests/chaos/kills.py for ROUNDS rounds (each
round kills every actor once, each worker once per actor, and the forwarder once per actor),
then a table of kills survived by kind, RPCs answered by status, leaks and lost cross-connects.

Otherwise: for every fault kind (crash, hang, delay, error), spread ``--faults`` injections
over the six targets (frontend, registrar, monitor, connection, worker, driver) with a
Request/Close load, then print a table: faults injected, calls made (OK / retriable), and
whether every invariant of tests/chaos/harness.py held. Exit status 1 if any did not.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from tests.chaos.harness import run_scenario
from tests.chaos.kills import KILL_KINDS, LIVE, run_kills
from tests.conftest import Node
from tests.helpers import IS_ROOT, BackgroundLoop, Pods

TARGETS = ("frontend", "registrar", "monitor", "connection", "worker", "driver")
KINDS = ("crash", "hang", "delay=100ms", "error=UNAVAILABLE")


def _maker(loop: BackgroundLoop, made: list[Node]) -> Callable[..., Node]:
    """A node factory like the `node_factory` fixture; every node goes into ``made``."""

    def make(netns: str | None = None, **env: str) -> Node:
        node = Node(loop, netns, **env)
        made.append(node)
        return node

    return make


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=100, help="faults per kind (all targets)")
    parser.add_argument("--ids", type=int, default=4, help="cross-connects under load")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--kills", type=int, metavar="ROUNDS", help="the load-under-kills run")
    parser.add_argument("--live", type=int, default=LIVE, help="--kills: live cross-connects")
    args = parser.parse_args()
    if not IS_ROOT:
        print("the chaos run needs root", file=sys.stderr)
        return 1
    if args.kills is not None:
        return kills_main(args.kills, args.live, args.seed)
    per_target = max(1, -(-args.faults // len(TARGETS)))
    loop = BackgroundLoop()
    rows = []
    failed = False
    try:
        for kind in KINDS:
            for target in TARGETS:
                plan = f"{target}:{kind}:after=2:rate=0.5:times={per_target}"
                made: list[Node] = []
                pods = Pods()
                make = _maker(loop, made)

                start = time.monotonic()
                try:
                    # long enough for `per_target` injections at rate 0.5
                    outcome = run_scenario(
                        make,
                        pods.make,
                        plan,
                        ids=args.ids,
                        ops_per_id=max(6, per_target),
                        min_duration=min(60.0, 2.0 + per_target * 0.6),
                        seed=args.seed,
                    )
                finally:
                    for node in made:
                        node.close()
                    pods.cleanup()
                took = time.monotonic() - start
                failed = failed or not outcome.held
                rows.append((kind, target, outcome, took))
                print(
                    f"{kind:18} {target:11} injected {outcome.injected:4}  calls {outcome.ops:4} "
                    f"(ok {outcome.ok}, retriable {outcome.retriable})  "
                    f"{'held' if outcome.held else 'VIOLATED'}  {took:5.1f} s",
                    flush=True,
                )
                for violation in outcome.violations:
                    print(f"    {violation}", flush=True)
    finally:
        loop.close()
    print()
    print("| kind | faults injected | calls | ok | retriable | invariants held |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        mine = [r for r in rows if r[0] == kind]
        injected = sum(r[2].injected for r in mine)
        calls = sum(r[2].ops for r in mine)
        ok = sum(r[2].ok for r in mine)
        retriable = sum(r[2].retriable for r in mine)
        held = sum(r[2].held for r in mine)
        print(
            f"| {kind} | {injected} | {calls} | {ok} | {retriable} | {held}/{len(mine)} targets |"
        )
    return 1 if failed else 0


def kills_main(rounds: int, live: int, seed: int) -> int:
    loop = BackgroundLoop()
    made: list[Node] = []
    pods = Pods()
    start = time.monotonic()
    try:
        report, chaos = run_kills(
            _maker(loop, made), pods.make, rounds=rounds, live=live, seed=seed
        )
    finally:
        for node in made:
            node.close()
        pods.cleanup()
        loop.close()
    took = time.monotonic() - start
    print(f"load under kills: {rounds} rounds, {live} live cross-connects, {took:.0f} s")
    print()
    print("| kill | survived | not seen to happen |")
    print("|---|---|---|")
    for kind in KILL_KINDS:
        print(f"| {kind} | {report.kills[kind]} | {report.missed[kind]} |")
    print()
    print("| RPC answer | count |")
    print("|---|---|")
    for code, count in chaos.outcome.codes.most_common():
        print(f"| {code} | {count} |")
    print()
    print(f"leaked interfaces: {len(report.leaks)}")
    print(f"lost cross-connects: {len(report.lost)}")
    print(f"other violations: {len(report.violations)}")
    for problem in report.leaks + report.lost + report.violations:
        print(f"    {problem}")
    return 0 if report.held else 1


if __name__ == "__main__":
    sys.exit(main())

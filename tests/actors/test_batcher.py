"""RemoveBatcher: concurrent removes go out in batches, each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from nsm_forwarder.actors.batcher import RemoveBatcher
from nsm_forwarder.drivers.errors import ForwarderError, NotFound


class SlowPool:
    """A pool whose remove_many takes a while, fails the records named "bad", and records how
    many calls overlap."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.active = 0
        self.most = 0

    async def acall(self, method: str, records: list[dict[str, Any]]) -> list[Any]:
        assert method == "remove_many"
        self.active += 1
        self.most = max(self.most, self.active)
        self.calls.append([r["id"] for r in records])
        await asyncio.sleep(0.05)
        self.active -= 1
        return [NotFound("gone").to_wire() if r["id"] == "bad" else None for r in records]


async def outcome(batcher: RemoveBatcher, xid: str) -> str:
    try:
        await batcher.remove({"id": xid})
        return "ok"
    except ForwarderError as exc:
        return exc.code


def test_concurrent_removes_are_batched_with_their_own_results() -> None:
    pool = SlowPool()

    async def go() -> dict[str, str]:
        batcher = RemoveBatcher(pool, slots=2)
        ids = [f"x{i}" for i in range(40)] + ["bad"]
        results = await asyncio.gather(*(outcome(batcher, i) for i in ids))
        assert len(pool.calls) < 41 and max(batcher.batches) > 1  # batched, not one call each
        return dict(zip(ids, results, strict=True))

    outcomes = asyncio.run(go())
    assert outcomes.pop("bad") == "NOT_FOUND"
    assert outcomes == {f"x{i}": "ok" for i in range(40)}
    assert sorted(x for call in pool.calls for x in call) == sorted([*outcomes, "bad"])
    assert pool.most <= 2  # never more batches in flight than slots


def test_a_lone_remove_is_sent_at_once() -> None:
    pool = SlowPool()
    start = time.monotonic()
    assert asyncio.run(outcome(RemoveBatcher(pool, slots=1), "x")) == "ok"
    assert time.monotonic() - start < 0.5
    assert pool.calls == [["x"]]


def test_removes_queued_behind_a_batch_go_in_the_next_one() -> None:
    pool = SlowPool()

    async def go() -> list[str]:
        batcher = RemoveBatcher(pool, slots=1)
        first = asyncio.ensure_future(outcome(batcher, "a"))
        await asyncio.sleep(0.01)  # "a" is in flight: these three wait for the next batch
        later = [outcome(batcher, x) for x in ("b", "c", "d")]
        return await asyncio.gather(first, *later)

    assert asyncio.run(go()) == ["ok"] * 4
    assert pool.calls == [["a"], ["b", "c", "d"]]


def test_a_caller_that_gives_up_does_not_stop_the_batch() -> None:
    pool = SlowPool()

    async def go() -> str:
        batcher = RemoveBatcher(pool, slots=1)
        gone = asyncio.ensure_future(outcome(batcher, "a"))
        stays = asyncio.ensure_future(outcome(batcher, "b"))
        await asyncio.sleep(0.01)
        gone.cancel()
        return await stays

    assert asyncio.run(go()) == "ok"
    assert pool.calls == [["a", "b"]]


def test_a_failed_call_fails_every_record_of_its_batch() -> None:
    class Broken:
        async def acall(self, method: str, records: list[Any]) -> list[Any]:
            raise ForwarderError("worker lost", code="UNAVAILABLE", retriable=True)

    async def go() -> None:
        await RemoveBatcher(Broken(), slots=1).remove({"id": "x"})

    with pytest.raises(ForwarderError, match="worker lost") as err:
        asyncio.run(go())
    assert err.value.retriable

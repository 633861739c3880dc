"""RemoveBatcher: concurrent removes go out in batches, each caller gets its own outcome."""

from __future__ import annotations

import threading
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
        self.lock = threading.Lock()

    def call(self, method: str, records: list[dict[str, Any]]) -> list[Any]:
        assert method == "remove_many"
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.calls.append([r["id"] for r in records])
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return [NotFound("gone").to_wire() if r["id"] == "bad" else None for r in records]


def test_concurrent_removes_are_batched_with_their_own_results() -> None:
    pool = SlowPool()
    batcher = RemoveBatcher(pool, slots=2)
    outcomes: dict[str, str] = {}

    def close(xid: str) -> None:
        try:
            batcher.remove({"id": xid})
            outcomes[xid] = "ok"
        except ForwarderError as exc:
            outcomes[xid] = exc.code

    threads = [threading.Thread(target=close, args=(f"x{i}",)) for i in range(40)]
    threads.append(threading.Thread(target=close, args=("bad",)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcomes.pop("bad") == "NOT_FOUND"
    assert outcomes == {f"x{i}": "ok" for i in range(40)}
    assert sorted(x for call in pool.calls for x in call) == sorted([*outcomes, "bad"])
    assert len(pool.calls) < 41 and max(batcher.batches) > 1  # batched, not one call each
    assert pool.most <= 2  # never more batches in flight than slots


def test_a_lone_remove_is_sent_at_once() -> None:
    pool = SlowPool()
    batcher = RemoveBatcher(pool, slots=1)
    start = time.monotonic()
    batcher.remove({"id": "x"})
    assert time.monotonic() - start < 0.5
    assert pool.calls == [["x"]]


def test_a_failed_call_fails_every_record_of_its_batch() -> None:
    class Broken:
        def call(self, method: str, records: list[Any]) -> list[Any]:
            raise ForwarderError("worker lost", code="UNAVAILABLE", retriable=True)

    with pytest.raises(ForwarderError, match="worker lost") as err:
        RemoveBatcher(Broken(), slots=1).remove({"id": "x"})
    assert err.value.retriable

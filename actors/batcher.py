"""RemoveBatcher: the removes of concurrent Closes, grouped into one worker call each.

Deleting a veth costs the kernel about 20 ms (it waits for an RCU grace period), whatever the
tool, but one request deleting many interfaces of a namespace waits only once. So a Close does
not send its own ``remove``: it queues its applied record here and waits. While fewer than
``slots`` batches are in flight, the caller takes everything queued (up to ``limit``) and sends
it as one ``remove_many`` call; callers arriving meanwhile queue up, and when a batch is done
the first of them takes the next one (group commit). Alone, a Close is a batch of one: no
waiting for a timer, so latency stays that of a single remove; under load the cost per
cross-connect falls with the batch size. Every caller returns only when its own record is
removed (or with its own error), so Close still answers only once the pod's interface is gone.

Thread-safe; used from ConnectionActor threads (blocking, like ``WorkerPool.call``).
"""

from __future__ import annotations

import threading
from typing import Any

from nsm_forwarder.drivers.errors import ForwarderError


class _Item:
    def __init__(self, record: Any) -> None:
        self.record = record
        self.wake = threading.Event()
        self.lead = False
        self.finished = False
        self.error: ForwarderError | None = None


class RemoveBatcher:
    def __init__(self, pool: Any, slots: int, limit: int = 64) -> None:
        self.pool = pool
        self.slots = max(1, slots)
        self.limit = limit
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._leading = 0
        #: sizes of the batches sent (for tests and the benchmark)
        self.batches: list[int] = []

    def remove(self, record: Any) -> None:
        """Remove ``record`` (an applied record) in some batch; raise its own error."""
        item = _Item(record)
        with self._lock:
            self._queue.append(item)
            if self._leading < self.slots:
                self._leading += 1
                item.lead = True
        while True:
            if item.lead:  # a leader always runs once, if only to pass the lead on
                item.lead = False
                self._run_batch()
            if item.finished:
                break
            item.wake.wait()
            item.wake.clear()
        if item.error is not None:
            raise item.error

    def _run_batch(self) -> None:
        with self._lock:
            batch, self._queue = self._queue[: self.limit], self._queue[self.limit :]
            if batch:
                self.batches.append(len(batch))
        errors: list[Any] = []
        if batch:
            try:
                errors = self.pool.call("remove_many", [i.record for i in batch])
            except ForwarderError as exc:
                errors = [exc.to_wire()] * len(batch)
        for item, error in zip(batch, errors, strict=True):
            item.error = ForwarderError.from_wire(error) if error else None
            item.finished = True
            item.wake.set()
        with self._lock:
            if self._queue:  # the next batch goes to the first caller still waiting
                nxt = self._queue[0]
                nxt.lead = True
                nxt.wake.set()
            else:
                self._leading -= 1

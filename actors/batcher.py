"""RemoveBatcher: the removes of concurrent Closes, grouped into one worker call each.

Deleting a veth costs the kernel about 20 ms (it waits for an RCU grace period), whatever the
tool, but one request deleting many interfaces of a namespace waits only once. So a Close does
not send its own ``remove``: it queues its applied record here and awaits it. While fewer than
``slots`` batches are in flight, a new batch starts at once with everything queued (up to
``limit``) as one ``remove_many`` call; Closes arriving meanwhile queue up, and when a batch is
done the next one takes what has queued since (group commit). Alone, a Close is a batch of one:
no waiting for a timer, so latency stays that of a single remove; under load the cost per
cross-connect falls with the batch size. Every caller returns only when its own record is
removed (or with its own error), so Close still answers only once the pod's interface is gone.

Runs on the asyncio loop (ConnectionActors await :meth:`remove`); the pool is called with
``acall``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nsm_forwarder.drivers.errors import ForwarderError, WorkerLost


class RemoveBatcher:
    def __init__(self, pool: Any, slots: int, limit: int = 64) -> None:
        self.pool = pool
        self.slots = max(1, slots)
        self.limit = limit
        self._queue: list[tuple[Any, asyncio.Future[None]]] = []
        self._running = 0
        #: sizes of the batches sent (for tests and the benchmark)
        self.batches: list[int] = []

    async def remove(self, record: Any) -> None:
        """Remove ``record`` (an applied record) in some batch; raise its own error."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, done))
        if self._running < self.slots:
            self._running += 1
            asyncio.get_running_loop().create_task(self._send_batches())
        await asyncio.shield(done)  # a caller giving up does not take the batch down

    async def _send_batches(self) -> None:
        """One slot: send batches while Closes are queued."""
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.limit], self._queue[self.limit :]
                self.batches.append(len(batch))
                try:
                    errors = await self.pool.acall("remove_many", [r for r, _ in batch])
                except ForwarderError as exc:
                    errors = [exc.to_wire()] * len(batch)
                except BaseException as exc:  # a bug, or the loop shutting down: nobody waits on
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(
                                exc if isinstance(exc, Exception) else WorkerLost("stopping")
                            )
                    raise
                for (_, done), error in zip(batch, errors, strict=True):
                    if done.done():
                        continue
                    if error:
                        done.set_exception(ForwarderError.from_wire(error))
                    else:
                        done.set_result(None)
        finally:
            self._running -= 1

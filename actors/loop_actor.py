"""Loop actors: actors that live on the main process's asyncio loop (the ConnectionActors).

A pykka actor owns a thread, and every message to it and every reply from it crosses threads:
the sender's queue put, the actor thread's wake-up, its wait for the GIL, and a
``call_soon_threadsafe`` back to the loop. For the per-id ConnectionActors that hop was most of
the main process's CPU per Request (measured: about 1 ms of the 3.1 ms a Request plus its Close
cost the main process at 32 clients went to thread switches, against about 0.25 ms of actual
work). Their work is a few SQLite writes, a plan and awaiting worker processes, so they run on
the loop itself: each :class:`LoopActor` has its own mailbox, drained by one task at a time,
one message at a time, in arrival order; different actors interleave at their ``await`` points
(a worker call), never inside a step.

The contract is the one of :class:`~nsm_forwarder.actors.runtime.BaseActor`: ``tell`` takes an
:class:`~nsm_forwarder.actors.runtime.Envelope` (so :func:`~nsm_forwarder.actors.runtime.ask`
works unchanged), ``handle(message) -> reply`` (a coroutine here) is what subclasses write, an
exception goes to the asker, ``on_start`` runs before the first message, and after ``crash()``
or ``stop()`` every queued and later ask fails with ``pykka.ActorDeadError``.

Threads: the loop's only. ``tell`` must be called on the loop's thread; a handler must never
block the loop for long (blocking work goes to a worker process, or ``asyncio.to_thread``). A
handler that never returns (an injected hang: :func:`hang`) holds only its own actor.
"""

from __future__ import annotations

import asyncio
import collections
import logging

import pykka

from nsm_forwarder.actors.messages import Message
from nsm_forwarder.actors.runtime import Envelope, adeliver

log = logging.getLogger(__name__)


class LoopActor:
    """An actor on the running asyncio loop; subclasses implement ``handle``."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox: collections.deque[Envelope] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._alive = True
        self._started = False
        self._told = 0
        self._handled = 0

    # --- the ActorRef side (the loop's thread) ------------------------------------------------

    def tell(self, envelope: Envelope) -> None:
        if not self._alive:
            raise pykka.ActorDeadError(f"{type(self).__name__} is stopped")
        self._inbox.append(envelope)
        self._told += 1
        if self._task is None:
            self._task = self._loop.create_task(self.run_mailbox())

    def is_alive(self) -> bool:
        return self._alive

    def idle(self) -> bool:
        """True when every message told so far has been handled: nothing is queued or being
        handled. Once the reply of the last message is seen, this is already True."""
        return self._handled == self._told

    def stop(self) -> None:
        """No more messages: queued asks fail with ActorDeadError. A message being handled
        runs on to its end."""
        self._die()

    # --- the actor side -----------------------------------------------------------------------

    async def on_start(self) -> None:
        """Before the first message."""

    async def handle(self, message: Message) -> object:
        raise NotImplementedError

    def crash(self) -> None:
        """Die now, from inside ``handle``: the rest of the mailbox is not processed and every
        queued ask fails with ActorDeadError (an injected crash; the owner restarts it)."""
        self._die()

    async def run_mailbox(self) -> None:
        """Handle queued messages until the mailbox is empty (the mailbox's task)."""
        try:
            if not self._started:
                self._started = True
                try:
                    await self.on_start()
                except Exception:
                    log.exception("%s failed to start", type(self).__name__)
            while self._inbox and self._alive:
                await adeliver(self, self._inbox.popleft(), self._count_handled)
        finally:
            self._task = None

    def _count_handled(self) -> None:
        self._handled += 1

    def _die(self) -> None:
        self._alive = False
        queued = list(self._inbox)
        self._inbox.clear()
        for envelope in queued:
            if envelope.reply is not None:
                envelope.reply.set_exception(
                    pykka.ActorDeadError(
                        f"{type(self).__name__} stopped before {envelope.message.TAG}"
                    )
                )


async def hang() -> None:
    """An injected hang in a loop actor: never return (its owner replaces the actor)."""
    await asyncio.Event().wait()

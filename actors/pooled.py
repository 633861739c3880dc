"""Pooled actors: many small actors sharing a few threads (for the per-id ConnectionActors).

A pykka actor owns a thread for its whole life, and starting one costs the starter a wait for
the new thread to get the GIL (several ms under load, on the asyncio loop that starts it). A
node has one actor per cross-connect id in use, so these run on a :class:`Dispatcher` instead:
each :class:`PooledActor` has its own mailbox and handles one message at a time, in arrival
order, on whichever of the dispatcher's threads is free. Different actors run in parallel.

The contract is the one of :class:`~nsm_forwarder.actors.runtime.BaseActor`: ``tell`` takes an
:class:`~nsm_forwarder.actors.runtime.Envelope` (so :func:`~nsm_forwarder.actors.runtime.ask`
works unchanged), ``handle(message) -> reply`` is what subclasses write, an exception goes to
the asker, ``on_start`` runs on a dispatcher thread before the first message, and after
``crash()`` or ``stop()`` every queued and later ask fails with ``pykka.ActorDeadError``.

A handler that never returns (an injected hang) keeps its thread; whoever gives up on it calls
:meth:`Dispatcher.replace_lost_thread` so the pool keeps its size.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading

import pykka

from nsm_forwarder.actors.messages import Message
from nsm_forwarder.actors.runtime import Envelope, deliver

log = logging.getLogger(__name__)


class Dispatcher:
    """Up to ``threads`` daemon threads running the mailboxes that have messages; threads are
    started as the load needs them and then kept."""

    def __init__(self, name: str, threads: int) -> None:
        if threads < 1:
            raise ValueError("a dispatcher needs at least one thread")
        self.name = name
        self.limit = threads
        self._ready: queue.SimpleQueue[PooledActor | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._backlog = 0
        self._stopped = False

    def schedule(self, actor: PooledActor) -> None:
        """Run ``actor``'s mailbox on a free thread (starting one if none is idle)."""
        spawn = False
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle thread takes it
            elif self._threads < self.limit and not self._stopped:
                self._threads += 1  # the new thread takes it
                spawn = True
            else:
                self._backlog += 1  # the next thread to finish takes it
        if spawn:
            self._spawn()
        self._ready.put(actor)

    def replace_lost_thread(self) -> None:
        """One thread is stuck in a handler for good: allow one more (started at once if
        mailboxes are waiting for a thread)."""
        with self._lock:
            self.limit += 1
            spawn = self._backlog > 0 and not self._stopped
            if spawn:
                self._backlog -= 1  # the new thread takes one of them
                self._threads += 1
        if spawn:
            self._spawn()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            threads = self._threads
        for _ in range(threads):
            self._ready.put(None)

    @property
    def threads(self) -> int:
        return self._threads

    def _spawn(self) -> None:
        threading.Thread(target=self._run, name=f"{self.name}-{self._threads}", daemon=True).start()

    def _run(self) -> None:
        while True:
            actor = self._ready.get()
            if actor is None:
                return
            actor.run_mailbox()
            with self._lock:
                if self._backlog:
                    self._backlog -= 1
                else:
                    self._idle += 1


class PooledActor:
    """An actor run by a :class:`Dispatcher`; subclasses implement ``handle``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._lock = threading.Lock()
        self._inbox: collections.deque[Envelope] = collections.deque()
        self._scheduled = False
        self._alive = True
        self._started = False
        self._told = 0
        self._handled = 0

    # --- the ActorRef side (any thread) -------------------------------------------------------

    def tell(self, envelope: Envelope) -> None:
        with self._lock:
            if not self._alive:
                raise pykka.ActorDeadError(f"{type(self).__name__} is stopped")
            self._inbox.append(envelope)
            self._told += 1
            if self._scheduled:
                return
            self._scheduled = True
        self._dispatcher.schedule(self)

    def is_alive(self) -> bool:
        return self._alive

    def idle(self) -> bool:
        """True when every message told so far has been handled: nothing is queued or being
        handled. Once the reply of the last message is seen, this is already True."""
        return self._handled == self._told

    def stop(self) -> None:
        """No more messages: queued asks fail with ActorDeadError."""
        self._die()

    # --- the actor side (its dispatcher thread) -----------------------------------------------

    def on_start(self) -> None:
        """Before the first message, on a dispatcher thread."""

    def handle(self, message: Message) -> object:
        raise NotImplementedError

    def crash(self) -> None:
        """Die now, from inside ``handle``: the rest of the mailbox is not processed and every
        queued ask fails with ActorDeadError (an injected crash; the owner restarts it)."""
        self._die()

    def run_mailbox(self) -> None:
        """Handle queued messages until the mailbox is empty (called by the Dispatcher)."""
        if not self._started:
            self._started = True
            try:
                self.on_start()
            except Exception:
                log.exception("%s failed to start", type(self).__name__)
        while True:
            with self._lock:
                if not self._inbox or not self._alive:
                    self._scheduled = False
                    return
                envelope = self._inbox.popleft()
            deliver(self, envelope, self._count_handled)

    def _count_handled(self) -> None:
        self._handled += 1  # only this actor's running thread writes it

    def _die(self) -> None:
        with self._lock:
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

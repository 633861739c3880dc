"""The small actor runtime every in-process actor uses (pykka threads + an asyncio bridge).

- :class:`BaseActor` is a pykka ThreadingActor whose mailbox carries :class:`Envelope` objects
  (a :mod:`~nsm_forwarder.actors.messages` message plus an optional reply slot). Subclasses
  implement ``handle(message) -> reply``. Actors that live on the asyncio loop instead
  (:mod:`~nsm_forwarder.actors.loop_actor`) take the same Envelopes; :func:`adeliver` is their
  :func:`deliver`.
- :func:`ask` sends from the asyncio loop and awaits the reply without blocking the loop: an
  actor thread resolves the asyncio future with ``loop.call_soon_threadsafe`` (never ``await`` a
  pykka future: it blocks the loop), a loop actor resolves it directly.
- Failure rule: an exception raised by ``handle`` goes to the asker, and the actor carries on.
  An exception from a ``tell`` (no reply slot) is logged and the actor keeps running too; actors
  never die from one bad message.
- Tracing (when on): ``ask`` puts the asker's tracing context in the Envelope, and the actor
  handles the message in a child span (see :mod:`~nsm_forwarder.actors.tracing`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pykka

from nsm_forwarder.actors import tracing
from nsm_forwarder.actors.messages import Message

log = logging.getLogger(__name__)


class Reply(Protocol):
    def set_result(self, value: Any) -> None: ...

    def set_exception(self, exc: BaseException) -> None: ...


@dataclass(frozen=True)
class Envelope:
    message: Message
    reply: Reply | None = None
    #: the asker's tracing context (only while tracing is on and a span is recording)
    trace: Any = None


class AsyncioReply:
    """Resolves an asyncio future from any thread (at once on the loop's own thread, where a
    loop actor answers; through ``call_soon_threadsafe`` from an actor thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()  # made by ask(), on the loop's thread
        self.future: asyncio.Future[Any] = loop.create_future()

    def set_result(self, value: Any) -> None:
        if threading.get_ident() == self.thread:
            self._settle(value, None)
        else:
            self.loop.call_soon_threadsafe(self._settle, value, None)

    def set_exception(self, exc: BaseException) -> None:
        if threading.get_ident() == self.thread:
            self._settle(None, exc)
        else:
            self.loop.call_soon_threadsafe(self._settle, None, exc)

    def _settle(self, value: Any, exc: BaseException | None) -> None:
        if self.future.done():
            return
        if exc is not None:
            self.future.set_exception(exc)
        else:
            self.future.set_result(value)


class BaseActor(pykka.ThreadingActor):
    """A pykka actor that handles Envelopes; subclasses implement ``handle``."""

    use_daemon_thread = True

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, Envelope):
            raise TypeError(f"{type(self).__name__} got a non-Envelope message {message!r:.80}")
        deliver(self, message)
        return None

    def handle(self, message: Message) -> Any:
        raise NotImplementedError

    def crash(self) -> None:
        """Die now, from inside ``handle``: the rest of the mailbox is not processed and every
        queued ask fails with ActorDeadError (an injected crash; the Supervisor restarts)."""
        self._stop()

    def on_stop(self) -> None:
        self._fail_queued()

    def on_failure(self, *exc_info: Any) -> None:
        self._fail_queued()

    def _fail_queued(self) -> None:
        """Answer every ask still in the mailbox with ActorDeadError (pykka drops them)."""
        while True:
            try:
                queued = self.actor_inbox.get_nowait()  # type: ignore[attr-defined]
            except queue.Empty:
                return
            inner = getattr(queued, "message", None)
            if isinstance(inner, Envelope) and inner.reply is not None:
                inner.reply.set_exception(
                    pykka.ActorDeadError(
                        f"{type(self).__name__} stopped before {inner.message.TAG}"
                    )
                )


class Handler(Protocol):
    def handle(self, message: Message) -> Any: ...


def deliver(actor: Handler, envelope: Envelope, handled: Callable[[], None] | None = None) -> None:
    """Hand one envelope to ``actor.handle``: the reply (or the exception) goes to the asker;
    an exception from a tell is logged. The actor carries on either way. ``handled`` is called
    once ``handle`` is done, before the reply goes out. With the asker's tracing context in the
    envelope, the message is handled in a child span."""
    if envelope.trace is not None:
        name = f"{type(actor).__name__} {envelope.message.TAG}"
        with tracing.actor_span(envelope.trace, name) as span:
            _deliver(actor, envelope, span, handled)
    else:
        _deliver(actor, envelope, None, handled)


def _deliver(
    actor: Handler, envelope: Envelope, span: Any, handled: Callable[[], None] | None
) -> None:
    try:
        try:
            result = actor.handle(envelope.message)
        finally:
            if handled is not None:
                handled()
    except Exception as exc:
        _failed(actor, envelope, span, exc)
        return
    if envelope.reply is not None:
        envelope.reply.set_result(result)


class AsyncHandler(Protocol):
    async def handle(self, message: Message) -> Any: ...


async def adeliver(
    actor: AsyncHandler, envelope: Envelope, handled: Callable[[], None] | None = None
) -> None:
    """:func:`deliver` for an actor on the asyncio loop, whose ``handle`` is a coroutine."""
    if envelope.trace is not None:
        name = f"{type(actor).__name__} {envelope.message.TAG}"
        with tracing.actor_span(envelope.trace, name) as span:
            await _adeliver(actor, envelope, span, handled)
    else:
        await _adeliver(actor, envelope, None, handled)


async def _adeliver(
    actor: AsyncHandler, envelope: Envelope, span: Any, handled: Callable[[], None] | None
) -> None:
    try:
        try:
            result = await actor.handle(envelope.message)
        finally:
            if handled is not None:
                handled()
    except Exception as exc:
        _failed(actor, envelope, span, exc)
        return
    if envelope.reply is not None:
        envelope.reply.set_result(result)


def _failed(actor: object, envelope: Envelope, span: Any, exc: Exception) -> None:
    """``handle`` raised: the exception goes to the asker (logged for a tell)."""
    if span is not None:
        tracing.record_error(span, exc)
    if envelope.reply is None:
        log.exception("%s failed on %s", type(actor).__name__, envelope.message.TAG)
    else:
        envelope.reply.set_exception(exc)


def tell(ref: pykka.ActorRef[Any], message: Message) -> None:
    """Fire and forget; raises pykka.ActorDeadError if the actor is gone."""
    ref.tell(Envelope(message))


class Mailbox(Protocol):
    """What :func:`ask` sends to: a pykka ActorRef or a loop actor."""

    def tell(self, message: Any) -> None: ...


def ask(ref: Mailbox, message: Message) -> asyncio.Future[Any]:
    """From the asyncio loop: a future of the actor's reply (await it)."""
    reply = AsyncioReply(asyncio.get_running_loop())
    ref.tell(Envelope(message, reply, tracing.capture() if tracing.enabled else None))
    return reply.future


class Link:
    """A swappable reference to an actor that the Supervisor may restart.

    ``tell`` goes to the current actor; if it has died, the message is dropped (logged at
    DEBUG): whoever restarts the actor rebuilds its state from the Store, not from lost tells.
    ``ask`` raises pykka.ActorDeadError if the actor is dead.
    """

    def __init__(self, name: str, ref: pykka.ActorRef[Any] | None = None) -> None:
        self.name = name
        self.ref = ref

    def tell(self, message: Message) -> None:
        ref = self.ref
        if ref is None:
            log.debug("%s is not running; dropped %s", self.name, message.TAG)
            return
        try:
            ref.tell(Envelope(message))
        except pykka.ActorDeadError:
            log.debug("%s is dead; dropped %s", self.name, message.TAG)

    def ask(self, message: Message) -> asyncio.Future[Any]:
        if self.ref is None:
            raise pykka.ActorDeadError(f"{self.name} is not running")
        return ask(self.ref, message)

    def is_alive(self) -> bool:
        return self.ref is not None and self.ref.is_alive()

"""Pooled actors (actors/pooled.py): per-actor order, parallelism across actors, a bounded
thread count, crash and stop semantics, and a hung handler's thread replaced."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pykka
import pytest

from nsm_forwarder.actors.faults import hang_forever
from nsm_forwarder.actors.messages import MarkDown, Message
from nsm_forwarder.actors.pooled import Dispatcher, PooledActor
from nsm_forwarder.actors.runtime import ask


class Recorder(PooledActor):
    """Appends each MarkDown's first side to ``seen``; "crash" crashes, "hang" hangs, "wait:X"
    blocks until event X is set, "boom" raises."""

    def __init__(self, dispatcher: Dispatcher, events: dict[str, threading.Event]) -> None:
        super().__init__(dispatcher)
        self.seen: list[str] = []
        self.events = events
        self.threads: set[str] = set()
        self.started_on: str | None = None

    def on_start(self) -> None:
        self.started_on = threading.current_thread().name

    def handle(self, message: Message) -> Any:
        assert isinstance(message, MarkDown)
        word = message.sides[0]
        self.threads.add(threading.current_thread().name)
        if word == "crash":
            self.crash()
            return None
        if word == "hang":
            hang_forever()
        if word.startswith("wait:"):
            self.events[word[5:]].wait(10)
        if word == "boom":
            raise ValueError("boom")
        self.seen.append(word)
        return word


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_one_message_at_a_time_in_order_and_replies() -> None:
    d = Dispatcher("t", 4)
    actor = Recorder(d, {})

    async def go() -> list[Any]:
        return await asyncio.gather(*(ask(actor, MarkDown(sides=[str(i)])) for i in range(50)))

    assert run(go()) == [str(i) for i in range(50)]
    assert actor.seen == [str(i) for i in range(50)]
    assert actor.started_on is not None and actor.started_on.startswith("t-")
    d.stop()


def test_actors_run_in_parallel_within_the_thread_limit() -> None:
    d = Dispatcher("t", 2)
    events = {"go": threading.Event()}
    a, b, c = (Recorder(d, events) for _ in range(3))

    async def go() -> None:
        first = ask(a, MarkDown(sides=["wait:go"]))
        second = ask(b, MarkDown(sides=["wait:go"]))
        third = ask(c, MarkDown(sides=["x"]))
        # a and b hold both threads, so c waits for one of them
        await asyncio.sleep(0.2)
        assert not third.done()
        assert d.threads == 2
        events["go"].set()
        assert await asyncio.gather(first, second, third) == ["wait:go", "wait:go", "x"]

    run(go())
    d.stop()


def test_an_exception_goes_to_the_asker_and_the_actor_goes_on() -> None:
    d = Dispatcher("t", 1)
    actor = Recorder(d, {})

    async def go() -> None:
        with pytest.raises(ValueError, match="boom"):
            await ask(actor, MarkDown(sides=["boom"]))
        assert await ask(actor, MarkDown(sides=["after"])) == "after"

    run(go())
    d.stop()


def test_crash_fails_queued_and_later_asks() -> None:
    d = Dispatcher("t", 1)
    events = {"go": threading.Event()}
    actor = Recorder(d, events)

    async def go() -> None:
        blocker = ask(actor, MarkDown(sides=["wait:go"]))
        crash = ask(actor, MarkDown(sides=["crash"]))
        queued = ask(actor, MarkDown(sides=["never"]))
        events["go"].set()
        await blocker
        await crash  # the crashing handler itself still answers (None)
        with pytest.raises(pykka.ActorDeadError):
            await queued
        assert not actor.is_alive()
        with pytest.raises(pykka.ActorDeadError):
            ask(actor, MarkDown(sides=["later"]))

    run(go())
    assert actor.seen == ["wait:go"]
    d.stop()


def test_a_hung_handler_thread_can_be_replaced() -> None:
    d = Dispatcher("t", 1)
    hung, other = Recorder(d, {}), Recorder(d, {})

    async def go() -> None:
        ask(hung, MarkDown(sides=["hang"]))
        late = ask(other, MarkDown(sides=["x"]))
        await asyncio.sleep(0.2)
        assert not late.done()  # the only thread is stuck
        hung.stop()
        d.replace_lost_thread()
        assert await ask(other, MarkDown(sides=["y"])) == "y"
        assert await late == "x"

    run(go())
    assert d.threads == 2
    d.stop()


def test_idle_only_once_every_told_message_is_handled() -> None:
    """An ask whose caller gave up leaves its message queued: the actor is not idle until that
    message is handled, and it is idle as soon as the last reply is seen."""
    d = Dispatcher("t", 1)
    events = {"go": threading.Event()}
    actor = Recorder(d, events)

    async def go() -> None:
        assert actor.idle()
        first = ask(actor, MarkDown(sides=["wait:go"]))
        abandoned = ask(actor, MarkDown(sides=["later"]))
        abandoned.cancel()  # the caller gave up; the message stays queued
        await asyncio.sleep(0.05)
        assert not actor.idle()
        events["go"].set()
        await first
        while not actor.idle():  # "later" still runs after the first reply
            await asyncio.sleep(0.01)
        assert actor.seen == ["wait:go", "later"]
        assert await ask(actor, MarkDown(sides=["x"])) == "x"
        assert actor.idle()  # already when the reply is seen

    run(go())
    d.stop()

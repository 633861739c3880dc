"""Loop actors (actors/loop_actor.py): per-actor order, interleaving across actors at their
awaits, crash and stop semantics, a hung handler holding only its own actor, idleness."""

from __future__ import annotations

import asyncio
from typing import Any

import pykka
import pytest

from nsm_forwarder.actors.loop_actor import LoopActor, hang
from nsm_forwarder.actors.messages import MarkDown, Message
from nsm_forwarder.actors.runtime import ask


class Recorder(LoopActor):
    """Appends each MarkDown's first side to ``seen``; "crash" crashes, "hang" hangs, "wait:X"
    awaits event X, "boom" raises."""

    def __init__(self, events: dict[str, asyncio.Event] | None = None) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.events = events or {}
        self.started = 0

    async def on_start(self) -> None:
        self.started += 1

    async def handle(self, message: Message) -> Any:
        assert isinstance(message, MarkDown)
        word = message.sides[0]
        if word == "crash":
            self.crash()
            return None
        if word == "hang":
            await hang()
        if word.startswith("wait:"):
            await self.events[word[5:]].wait()
        if word == "boom":
            raise ValueError("boom")
        self.seen.append(word)
        return word


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_one_message_at_a_time_in_order_and_replies() -> None:
    async def go() -> tuple[list[Any], Recorder]:
        actor = Recorder()
        replies = await asyncio.gather(*(ask(actor, MarkDown(sides=[str(i)])) for i in range(50)))
        return replies, actor

    replies, actor = run(go())
    assert replies == [str(i) for i in range(50)]
    assert actor.seen == [str(i) for i in range(50)]
    assert actor.started == 1  # on_start once, before the first message


def test_a_waiting_actor_holds_only_itself() -> None:
    """One actor awaiting (a worker call) holds its own later messages, not other actors."""

    async def go() -> None:
        events = {"go": asyncio.Event()}
        a, b = Recorder(events), Recorder(events)
        first = ask(a, MarkDown(sides=["wait:go"]))
        behind = ask(a, MarkDown(sides=["after"]))
        assert await ask(b, MarkDown(sides=["x"])) == "x"
        assert not first.done() and not behind.done()
        events["go"].set()
        assert await asyncio.gather(first, behind) == ["wait:go", "after"]

    run(go())


def test_an_exception_goes_to_the_asker_and_the_actor_goes_on() -> None:
    async def go() -> None:
        actor = Recorder()
        with pytest.raises(ValueError, match="boom"):
            await ask(actor, MarkDown(sides=["boom"]))
        assert await ask(actor, MarkDown(sides=["after"])) == "after"

    run(go())


def test_crash_fails_queued_and_later_asks() -> None:
    async def go() -> Recorder:
        events = {"go": asyncio.Event()}
        actor = Recorder(events)
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
        return actor

    assert run(go()).seen == ["wait:go"]


def test_a_hung_actor_is_stopped_and_others_go_on() -> None:
    async def go() -> None:
        hung, other = Recorder(), Recorder()
        never = ask(hung, MarkDown(sides=["hang"]))
        queued = ask(hung, MarkDown(sides=["queued"]))
        assert await ask(other, MarkDown(sides=["x"])) == "x"
        await asyncio.sleep(0.05)
        assert not never.done()
        hung.stop()  # as Connections does with an actor that stopped answering
        with pytest.raises(pykka.ActorDeadError):
            await queued
        assert await ask(other, MarkDown(sides=["y"])) == "y"
        never.cancel()

    run(go())


def test_idle_only_once_every_told_message_is_handled() -> None:
    """An ask whose caller gave up leaves its message queued: the actor is not idle until that
    message is handled, and it is idle as soon as the last reply is seen."""

    async def go() -> None:
        events = {"go": asyncio.Event()}
        actor = Recorder(events)
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

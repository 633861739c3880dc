"""Fault injection: wraps the message handling of a named actor or worker (see the plan syntax
in :mod:`nsm_forwarder.config.faults`).

Every actor and worker owns one :class:`Injector` for its name and calls :meth:`Injector.check`
before handling a message. ``check`` returns the action to take, and the caller carries it out
in its own way (a worker process exits, a pykka actor stops itself, the registrar's task ends):

- ``None``: handle the message normally (after any injected delay, already slept);
- :class:`Crash`: die now (the Supervisor restarts it from the Store / its peers);
- :class:`Hang`: never answer (the caller's watchdog replaces it);
- raises :class:`InjectedError`: the message fails with the chosen gRPC status.

With an empty plan ``check`` is a counter increment and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable

from nsm_forwarder.config.faults import Fault
from nsm_forwarder.drivers.errors import ForwarderError

log = logging.getLogger(__name__)

RETRIABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED"})


class InjectedError(ForwarderError):
    """A failure injected by the fault plan."""


class Crash:
    """Action: the actor or process must die now."""


class Hang:
    """Action: the actor or process must stop answering for good."""


CRASH = Crash()
HANG = Hang()


class _Armed:
    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.seen = 0
        self.injected = 0
        self.random = random.Random(fault.seed)

    def fires(self) -> bool:
        self.seen += 1
        f = self.fault
        if self.seen <= f.after or (f.times is not None and self.injected >= f.times):
            return False
        if f.rate < 1.0 and self.random.random() >= f.rate:
            return False
        self.injected += 1
        return True


class Injector:
    """The faults of one named actor or worker."""

    def __init__(self, name: str, plan: Iterable[Fault]) -> None:
        self.name = name
        self._armed = [_Armed(f) for f in plan if f.applies_to(name)]
        self._lock = threading.Lock()
        self.injected = 0
        if self._armed:
            log.warning(
                "FAULT INJECTION ACTIVE for %s: %s",
                name,
                ", ".join(str(a.fault) for a in self._armed),
            )

    def __bool__(self) -> bool:
        return bool(self._armed)

    def check(self, what: str = "message") -> Crash | Hang | None:
        """Decide what happens to the next message (sleeps for an injected delay)."""
        delay, action = self._decide(what)
        if delay:
            time.sleep(delay)
        return action()

    async def acheck(self, what: str = "message") -> Crash | Hang | None:
        """:meth:`check` for asyncio code: an injected delay does not block the loop."""
        delay, action = self._decide(what)
        if delay:
            await asyncio.sleep(delay)
        return action()

    def _decide(self, what: str) -> tuple[float, Callable[[], Crash | Hang | None]]:
        if not self._armed:
            return 0.0, _nothing
        with self._lock:
            fired = [a.fault for a in self._armed if a.fires()]
            self.injected += len(fired)
        for fault in fired:
            log.warning("injecting %s into %s (%s)", fault.kind, self.name, what)

        def action() -> Crash | Hang | None:
            for fault in fired:
                if fault.kind == "crash":
                    return CRASH
                if fault.kind == "hang":
                    return HANG
                if fault.kind == "error":
                    raise InjectedError(
                        f"injected {fault.code} in {self.name}",
                        code=fault.code,
                        retriable=fault.code in RETRIABLE,
                    )
            return None

        return sum(f.delay for f in fired if f.kind == "delay"), action


def _nothing() -> None:
    return None


def hang_forever() -> None:
    """An injected hang: block this thread for good (its watchdog replaces the actor)."""
    threading.Event().wait()

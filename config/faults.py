"""The fault plan: which actor or worker misbehaves, how, and when (for fault-injection tests).

Syntax: entries separated by ``,`` or ``;`` (or spaces); each entry is

    TARGET:KIND[:OPTION=VALUE]...

TARGET  ``frontend`` | ``registrar`` | ``monitor`` | ``connection`` (every ConnectionActor) |
        ``worker`` (every worker process) | ``worker-N`` (worker N, from 0) |
        ``driver`` (the data-plane calls - apply / remove / sweep - in every worker)
KIND    ``crash``            the actor or process dies while handling the message
        ``hang``             it stops answering, for good
        ``delay=DURATION``   it handles the message after DURATION (Go syntax: 200ms, 1s)
        ``error=CODE``       the message fails with that gRPC status (UNAVAILABLE, INTERNAL...)
OPTION  ``after=N``   let the first N messages through (default 0)
        ``rate=P``    inject with probability P, 0 < P <= 1 (default 1)
        ``times=N``   inject at most N times (default: no limit)
        ``seed=N``    seed of the random choices made by ``rate`` (default: the entry's index)

Examples: ``worker-1:crash:after=3``, ``registrar:hang``, ``driver:delay=200ms``,
``connection:error=UNAVAILABLE:rate=0.1``, ``monitor:crash:after=5:times=1``.

This module only parses (pure, no I/O); :mod:`nsm_forwarder.actors.faults` injects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TARGETS = ("frontend", "registrar", "monitor", "connection", "worker", "driver")
KINDS = ("crash", "hang", "delay", "error")
STATUS_CODES = (
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


class FaultPlanError(ValueError):
    """The fault plan text is malformed; the message names the entry and the problem."""


@dataclass(frozen=True)
class Fault:
    """One entry of the plan."""

    target: str  # as written: "worker-1", "connection", ...
    kind: str  # crash | hang | delay | error
    delay: float = 0.0  # seconds, for kind == "delay"
    code: str = ""  # status name, for kind == "error"
    after: int = 0
    rate: float = 1.0
    times: int | None = None
    seed: int = 0

    def applies_to(self, name: str) -> bool:
        """True for the actor or worker called ``name`` ("worker-1" matches "worker" too)."""
        return self.target == name or (self.target == "worker" and name.startswith("worker-"))

    def __str__(self) -> str:
        kind = {"delay": f"delay={self.delay:g}s", "error": f"error={self.code}"}.get(
            self.kind, self.kind
        )
        opts = [f"after={self.after}"] if self.after else []
        opts += [f"rate={self.rate:g}"] if self.rate != 1.0 else []
        opts += [f"times={self.times}"] if self.times is not None else []
        return ":".join([self.target, kind, *opts])


def parse_plan(text: str) -> tuple[Fault, ...]:
    """Parse a fault plan (see the module docstring); raises FaultPlanError."""
    entries = [e for e in re.split(r"[,;\s]+", text.strip()) if e]
    return tuple(_parse_entry(entry, index) for index, entry in enumerate(entries))


def _parse_entry(entry: str, index: int) -> Fault:
    parts = entry.split(":")
    if len(parts) < 2:
        raise FaultPlanError(f"fault {entry!r}: expected TARGET:KIND[:OPTION=VALUE]...")
    target, kind_text, *options = parts
    if target not in TARGETS and not re.fullmatch(r"worker-\d+", target):
        raise FaultPlanError(
            f"fault {entry!r}: unknown target {target!r} (one of {', '.join(TARGETS)}, worker-N)"
        )
    kind, _, value = kind_text.partition("=")
    fields: dict[str, object] = {"target": target, "kind": kind, "seed": index}
    if kind in ("crash", "hang"):
        if value:
            raise FaultPlanError(f"fault {entry!r}: {kind} takes no value")
    elif kind == "delay":
        fields["delay"] = _duration(entry, value)
    elif kind == "error":
        if value not in STATUS_CODES:
            raise FaultPlanError(
                f"fault {entry!r}: error needs a gRPC status name such as UNAVAILABLE, "
                f"got {value!r}"
            )
        fields["code"] = value
    else:
        raise FaultPlanError(
            f"fault {entry!r}: unknown kind {kind!r} (crash, hang, delay=DURATION, error=CODE)"
        )
    for option in options:
        name, sep, raw = option.partition("=")
        if not sep:
            raise FaultPlanError(f"fault {entry!r}: option {option!r} needs a value")
        if name in ("after", "times", "seed"):
            if not raw.isdigit():
                raise FaultPlanError(f"fault {entry!r}: {name} must be a whole number")
            fields[name] = int(raw)
        elif name == "rate":
            try:
                rate = float(raw)
            except ValueError:
                rate = -1.0
            if not 0 < rate <= 1:
                raise FaultPlanError(f"fault {entry!r}: rate must be in (0, 1], got {raw!r}")
            fields["rate"] = rate
        else:
            raise FaultPlanError(f"fault {entry!r}: unknown option {name!r}")
    return Fault(**fields)  # type: ignore[arg-type]


def _duration(entry: str, text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise FaultPlanError(f"fault {entry!r}: delay needs a duration such as 200ms, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]

"""Every message exchanged between actors and worker processes, in one place.

A message is a small frozen dataclass made of msgpack-able values (str, int, bool, bytes, lists,
dicts). ``to_wire(msg)`` / ``from_wire(data)`` turn it into ``[tag, {field: value}]`` and back;
``pack`` / ``unpack`` add msgpack. In-process actors pass the objects themselves; a message that
crosses a process boundary travels packed, so any actor could move to another process.

Cross-connects travel as serialized ``crossconnect.CrossConnect`` protobuf bytes, so what a client
sent is echoed back and stored exactly (labels, paths and unknown fields included).

Commands are imperative (``ApplyXconn``), events past tense (``XconnUpdated``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import msgpack


@dataclasses.dataclass(frozen=True)
class Message:
    """Base of all messages; subclasses set a unique ``TAG``."""

    TAG: ClassVar[str] = ""


# --- Frontend -> ConnectionActor ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ApplyXconn(Message):
    """Request: build (or update) the cross-connect; reply :class:`XconnApplied`."""

    TAG: ClassVar[str] = "apply"
    xcon: bytes
    #: the caller's gRPC deadline (``time.monotonic()``; 0: none): a Request whose deadline
    #: has passed is not started, or is rolled back instead of committed
    deadline: float = 0.0


@dataclasses.dataclass(frozen=True)
class XconnApplied(Message):
    """Reply to ApplyXconn: the cross-connect as applied."""

    TAG: ClassVar[str] = "applied"
    xcon: bytes


@dataclasses.dataclass(frozen=True)
class CloseXconn(Message):
    """Close: tear the cross-connect down; reply :class:`XconnClosed`. Unknown ids are OK."""

    TAG: ClassVar[str] = "close"
    xcon: bytes


@dataclasses.dataclass(frozen=True)
class XconnClosed(Message):
    """Reply to CloseXconn; ``known`` is False when the id had no cross-connect."""

    TAG: ClassVar[str] = "closed"
    id: str
    known: bool


@dataclasses.dataclass(frozen=True)
class MarkDown(Message):
    """The pod network namespaces of these ``sides`` ("source" / "destination") are gone:
    set those ends' state DOWN and emit an UPDATE; reply True if anything changed."""

    TAG: ClassVar[str] = "markdown"
    sides: list[str]


@dataclasses.dataclass(frozen=True)
class Rebuild(Message):
    """The data plane restarted and lost everything (a new VPP instance, ``why``): build the
    cross-connect again from its stored plan and emit an UPDATE; reply True if it was rebuilt."""

    TAG: ClassVar[str] = "rebuild"
    why: str


@dataclasses.dataclass(frozen=True)
class FinishClose(Message):
    """From a ConnectionActor to itself: a Close of its id failed with a retriable error (its
    worker was lost), when the removal may already have begun: remove what is left and finish
    that Close (row deleted, DELETE event). Told again, ``attempt`` + 1, while it keeps failing
    retriably, up to a bound; no reply."""

    TAG: ClassVar[str] = "finishclose"
    attempt: int


# --- ConnectionActor -> Monitor ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class XconnUpdated(Message):
    """Event: a cross-connect was applied or changed (becomes an UPDATE event)."""

    TAG: ClassVar[str] = "updated"
    xcon: bytes


@dataclasses.dataclass(frozen=True)
class XconnDeleted(Message):
    """Event: a cross-connect was closed (becomes a DELETE event)."""

    TAG: ClassVar[str] = "deleted"
    xcon: bytes


@dataclasses.dataclass(frozen=True)
class MetricsCollected(Message):
    """Event: interface counters, keyed ``SRC-<id>`` / ``DST-<id>`` (values are decimal
    strings, spec §4.9); becomes an UPDATE event carrying only ``metrics``."""

    TAG: ClassVar[str] = "metrics"
    metrics: dict[str, dict[str, str]]


# --- Frontend -> Monitor -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Subscribe(Message):
    """Reply ``[seq, event]``: subscriber ``sub_id``'s INITIAL_STATE_TRANSFER (a serialized
    CrossConnectEvent) and the number of the last event it includes; the subscriber then takes
    the broadcast events numbered after ``seq``."""

    TAG: ClassVar[str] = "subscribe"
    sub_id: str


@dataclasses.dataclass(frozen=True)
class Reload(Message):
    """After a Monitor restart: the Store's cross-connects (serialized), for every id that has
    not changed since the new Monitor started."""

    TAG: ClassVar[str] = "reload"
    xcons: list[bytes]


@dataclasses.dataclass(frozen=True)
class ListXconns(Message):
    """Reply: list of every current cross-connect (serialized)."""

    TAG: ClassVar[str] = "list"


# --- ConnectionActor -> worker process (DriverHost) ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerCall(Message):
    """Run ``method`` (apply / remove / observe / ping) of the driver with ``args``; ``meta``
    (or None) carries the caller's context: ``xcon_id`` (for the worker's logs) and, while
    tracing is on, the W3C trace context (``traceparent``, ``tracestate``)."""

    TAG: ClassVar[str] = "call"
    corr: int
    method: str
    args: list[Any]
    meta: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class WorkerReply(Message):
    """Result of a WorkerCall: ``ok`` and ``result``, or ``error`` = ForwarderError.to_wire()."""

    TAG: ClassVar[str] = "reply"
    corr: int
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TAG: cls
    for cls in (
        ApplyXconn,
        XconnApplied,
        CloseXconn,
        XconnClosed,
        MarkDown,
        Rebuild,
        FinishClose,
        XconnUpdated,
        XconnDeleted,
        MetricsCollected,
        Subscribe,
        Reload,
        ListXconns,
        WorkerCall,
        WorkerReply,
    )
}


def to_wire(msg: Message) -> list[Any]:
    """``[tag, {field: value}]`` of a message."""
    fields = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}
    return [msg.TAG, fields]


def from_wire(data: Any) -> Message:
    """The message that ``to_wire`` produced; ValueError on anything else."""
    if not isinstance(data, list | tuple) or len(data) != 2 or not isinstance(data[1], dict):
        raise ValueError(f"not a message: {data!r:.80}")
    cls = MESSAGE_TYPES.get(data[0])
    if cls is None:
        raise ValueError(f"unknown message tag {data[0]!r}")
    return cls(**data[1])


def pack(msg: Message) -> bytes:
    return msgpack.packb(to_wire(msg), use_bin_type=True)


def unpack(data: bytes) -> Message:
    return from_wire(msgpack.unpackb(data, raw=False))


class Decoder:
    """Sans-I/O stream decoder: ``feed(bytes)`` returns the complete messages received so far."""

    def __init__(self, max_buffer_size: int = 64 * 1024 * 1024) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_buffer_size)

    def feed(self, data: bytes) -> list[Message]:
        self._unpacker.feed(data)
        return [from_wire(item) for item in self._unpacker]

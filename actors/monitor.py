"""Monitor: the cross-connect event hub behind MonitorCrossConnects.

Accepts:  XconnUpdated / XconnDeleted (tell, from ConnectionActors); MetricsCollected (tell,
          from the metrics poller; an UPDATE with only ``metrics``, so nsmd does not re-run its
          per-cross-connect update every period, unlike upstream); Reload (tell, from the
          Supervisor after a restart); Subscribe -> [seq, INITIAL_STATE_TRANSFER bytes] (ask);
          ListXconns -> [bytes] (ask).
Sends:    every event, numbered, to ``deliver(seq, event, changed)`` (the Frontend's fan-out;
          ``changed``: id -> the cross-connect's bytes as kept here, None when deleted, so the
          fan-out neither parses the event nor keeps a copy), which must not block, so a slow
          subscriber never holds up Requests or other subscribers.
Guarantees: events are numbered in the order they happen, starting after ``first_seq``; a
          Subscribe reply carries the number of the last event it includes, so the subscriber
          takes only later events: its own INITIAL_STATE_TRANSFER, then every UPDATE and DELETE
          (the cross-connect as last applied) in order, none missed, none twice.
Threads:  its own pykka thread.
Failure:  an injected crash stops it; the Supervisor starts a new one (first_seq continues the
          old numbering), points the Link at it and sends Reload with the Store's rows; the
          Frontend diffs its view against the new state, so subscribers see what they missed.
Owns:     the map id -> cross-connect of everything currently applied, serialized: bytes cost
          about a tenth of a parsed message (~0.3 KiB against ~2.7 KiB each), and ListXconns
          hands out the same bytes objects every time, so callers' caches keyed by them
          (:class:`~nsm_forwarder.actors.xcons.LiveEnds`) hold no copies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nsm_forwarder.actors.faults import CRASH, HANG, Injector, hang_forever
from nsm_forwarder.actors.messages import (
    ListXconns,
    Message,
    MetricsCollected,
    Reload,
    Subscribe,
    XconnDeleted,
    XconnUpdated,
)
from nsm_forwarder.actors.runtime import BaseActor
from nsm_forwarder.drivers.errors import WorkerLost
from nsm_forwarder.proto import crossconnect_pb2

log = logging.getLogger(__name__)

Deliver = Callable[[int, bytes, dict[str, bytes | None]], None]


def event_bytes(kind: int, xcons: list[crossconnect_pb2.CrossConnect]) -> bytes:
    event = crossconnect_pb2.CrossConnectEvent(type=kind)  # type: ignore[arg-type]
    for xcon in xcons:
        event.cross_connects[xcon.id].CopyFrom(xcon)
    return event.SerializeToString()


def initial_bytes(xcons: dict[str, bytes]) -> bytes:
    """The INITIAL_STATE_TRANSFER event of these serialized cross-connects (id -> bytes)."""
    event = crossconnect_pb2.CrossConnectEvent(type=crossconnect_pb2.INITIAL_STATE_TRANSFER)
    for xcon_id, data in xcons.items():
        event.cross_connects[xcon_id].MergeFromString(data)
    return event.SerializeToString()


class MonitorActor(BaseActor):
    """``reload``: whether a Reload will come (None: when ``first_seq`` > 0, as the Supervisor
    starts a replacement; the first Monitor of a forwarder gets none). Until it has come, the
    ids that change are remembered, so it does not undo them; after it, or without one, none
    are (a forwarder with a long life would otherwise remember every id it ever served)."""

    def __init__(
        self,
        deliver: Deliver,
        first_seq: int = 0,
        faults: Injector | None = None,
        *,
        reload: bool | None = None,
    ):
        super().__init__()
        self.deliver = deliver
        self.seq = first_seq
        self.faults = faults or Injector("monitor", ())
        self.xcons: dict[str, bytes] = {}  # id -> the cross-connect as last applied
        #: ids changed since start, while a Reload is to come (it must not undo them)
        self.touched: set[str] | None = (
            set() if (first_seq > 0 if reload is None else reload) else None
        )

    def handle(self, message: Message) -> Any:
        action = self.faults.check(message.TAG)
        if action is CRASH:
            self.crash()
            raise WorkerLost("the monitor crashed (injected); it is being restarted")
        if action is HANG:
            hang_forever()
        if isinstance(message, XconnUpdated):
            xcon = crossconnect_pb2.CrossConnect.FromString(message.xcon)
            self.xcons[xcon.id] = message.xcon
            if self.touched is not None:
                self.touched.add(xcon.id)
            self._publish(event_bytes(crossconnect_pb2.UPDATE, [xcon]), {xcon.id: message.xcon})
            return None
        if isinstance(message, XconnDeleted):
            xcon = crossconnect_pb2.CrossConnect.FromString(message.xcon)
            self.xcons.pop(xcon.id, None)
            if self.touched is not None:
                self.touched.add(xcon.id)
            self._publish(event_bytes(crossconnect_pb2.DELETE, [xcon]), {xcon.id: None})
            return None
        if isinstance(message, MetricsCollected):
            event = crossconnect_pb2.CrossConnectEvent(type=crossconnect_pb2.UPDATE)
            for key, counters in message.metrics.items():
                event.metrics[key].metrics.update(counters)
            self._publish(event.SerializeToString())
            return None
        if isinstance(message, Reload):
            touched = self.touched or set()
            for data in message.xcons:
                xcon = crossconnect_pb2.CrossConnect.FromString(data)
                if xcon.id not in touched:
                    self.xcons[xcon.id] = data
            self.touched = None  # there is one Reload
            return None
        if isinstance(message, Subscribe):
            log.debug("subscriber %s joined at event %d", message.sub_id, self.seq)
            return [self.seq, initial_bytes(self.xcons)]
        if isinstance(message, ListXconns):
            return list(self.xcons.values())
        raise TypeError(f"MonitorActor cannot handle {message.TAG}")

    def _publish(self, event: bytes, changed: dict[str, bytes | None] | None = None) -> None:
        self.seq += 1
        try:
            self.deliver(self.seq, event, changed or {})
        except Exception:
            log.exception("delivering event %d failed", self.seq)

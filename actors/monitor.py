"""Monitor: the cross-connect event hub behind MonitorCrossConnects.

Accepts:  XconnUpdated / XconnDeleted (tell, from ConnectionActors); MetricsCollected (tell,
          from the metrics poller; an UPDATE with only ``metrics``, so nsmd does not re-run its
          per-cross-connect update every period, unlike upstream); Subscribe -> serialized
          INITIAL_STATE_TRANSFER event (ask); Unsubscribe (tell); ListXconns -> [bytes] (ask).
Sends:    serialized ``crossconnect.CrossConnectEvent`` bytes to each subscriber through the
          ``deliver(sub_id, event)`` callable it was built with (the Frontend's delivery table).
Guarantees: every subscriber first gets its own INITIAL_STATE_TRANSFER with every current
          cross-connect, then each UPDATE (one cross-connect) and DELETE (the cross-connect as
          last applied) in the order they happened; ``deliver`` must not block, so a slow
          subscriber never holds up Requests or other subscribers.
Threads:  its own pykka thread.
Owns:     the map id -> cross-connect of everything currently applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nsm_forwarder.actors.messages import (
    ListXconns,
    Message,
    MetricsCollected,
    Subscribe,
    Unsubscribe,
    XconnDeleted,
    XconnUpdated,
)
from nsm_forwarder.actors.runtime import BaseActor
from nsm_forwarder.proto import crossconnect_pb2

log = logging.getLogger(__name__)

Deliver = Callable[[str, bytes], None]


def event_bytes(kind: int, xcons: list[crossconnect_pb2.CrossConnect]) -> bytes:
    event = crossconnect_pb2.CrossConnectEvent(type=kind)  # type: ignore[arg-type]
    for xcon in xcons:
        event.cross_connects[xcon.id].CopyFrom(xcon)
    return event.SerializeToString()


class MonitorActor(BaseActor):
    def __init__(self, deliver: Deliver) -> None:
        super().__init__()
        self.deliver = deliver
        self.xcons: dict[str, crossconnect_pb2.CrossConnect] = {}
        self.subscribers: set[str] = set()

    def handle(self, message: Message) -> Any:
        if isinstance(message, XconnUpdated):
            xcon = crossconnect_pb2.CrossConnect.FromString(message.xcon)
            self.xcons[xcon.id] = xcon
            self._publish(event_bytes(crossconnect_pb2.UPDATE, [xcon]))
            return None
        if isinstance(message, XconnDeleted):
            xcon = crossconnect_pb2.CrossConnect.FromString(message.xcon)
            self.xcons.pop(xcon.id, None)
            self._publish(event_bytes(crossconnect_pb2.DELETE, [xcon]))
            return None
        if isinstance(message, MetricsCollected):
            event = crossconnect_pb2.CrossConnectEvent(type=crossconnect_pb2.UPDATE)
            for key, counters in message.metrics.items():
                event.metrics[key].metrics.update(counters)
            self._publish(event.SerializeToString())
            return None
        if isinstance(message, Subscribe):
            self.subscribers.add(message.sub_id)
            log.debug("subscriber %s joined (%d now)", message.sub_id, len(self.subscribers))
            return event_bytes(crossconnect_pb2.INITIAL_STATE_TRANSFER, list(self.xcons.values()))
        if isinstance(message, Unsubscribe):
            self.subscribers.discard(message.sub_id)
            return None
        if isinstance(message, ListXconns):
            return [x.SerializeToString() for x in self.xcons.values()]
        raise TypeError(f"MonitorActor cannot handle {message.TAG}")

    def _publish(self, event: bytes) -> None:
        for sub_id in list(self.subscribers):
            try:
                self.deliver(sub_id, event)
            except Exception:
                log.exception("delivering an event to %s failed; dropping it", sub_id)
                self.subscribers.discard(sub_id)

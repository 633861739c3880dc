"""The cross-connect subscription fan-out: ordering by sequence number and resync after a
Monitor restart (no sockets, no root)."""

from __future__ import annotations

import asyncio

from nsm_forwarder.actors.frontend import CrossConnectMonitorService
from nsm_forwarder.actors.monitor import event_bytes
from nsm_forwarder.proto import crossconnect_pb2

UPDATE, DELETE = crossconnect_pb2.UPDATE, crossconnect_pb2.DELETE


def xc(xcon_id: str, payload: str = "IP") -> crossconnect_pb2.CrossConnect:
    return crossconnect_pb2.CrossConnect(id=xcon_id, payload=payload)


def drain(queue: asyncio.Queue[tuple[int, bytes]]) -> list[tuple[int, str]]:
    out = []
    while not queue.empty():
        _, data = queue.get_nowait()
        event = crossconnect_pb2.CrossConnectEvent.FromString(data)
        out.append((event.type, ",".join(sorted(event.cross_connects))))
    return out


def test_frontend_fan_out_skips_stale_and_resyncs_after_monitor_restart() -> None:
    async def scenario() -> None:
        service = CrossConnectMonitorService(asyncio.Event())
        queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        service.queues["s"] = queue
        a, b = xc("a"), xc("b")
        service._fan_out(1, event_bytes(UPDATE, [a]), {"a": a.SerializeToString()})
        service._fan_out(2, event_bytes(UPDATE, [b]), {"b": b.SerializeToString()})
        # a replaced Monitor's late event
        service._fan_out(2, event_bytes(DELETE, [b]), {"b": None})
        assert drain(queue) == [(UPDATE, "a"), (UPDATE, "b")]
        # the Monitor restarts; meanwhile "a" changed, "b" was closed, "c" was made
        now = [xc("a", "ETHERNET").SerializeToString(), xc("c").SerializeToString()]
        service.resync(now)
        assert sorted(drain(queue)) == sorted([(DELETE, "b"), (UPDATE, "a"), (UPDATE, "c")])
        assert set(service.view) == {"a", "c"}
        service.resync(now)  # nothing changed: nothing sent
        assert drain(queue) == []

    asyncio.run(scenario())

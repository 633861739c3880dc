"""The Monitor's map of live cross-connects (kept serialized), its Reload after a restart, and the
ends cache of the periodic checks (no sockets, no root; the actor's handle() called directly)."""

from __future__ import annotations

from nsm_forwarder.actors.messages import (
    ListXconns,
    Reload,
    Subscribe,
    XconnDeleted,
    XconnUpdated,
)
from nsm_forwarder.actors.monitor import MonitorActor
from nsm_forwarder.actors.xcons import LiveEnds, local_end_names
from nsm_forwarder.proto import crossconnect_pb2
from tests.helpers import end

UPDATE, DELETE = crossconnect_pb2.UPDATE, crossconnect_pb2.DELETE


def xc(xcon_id: str, payload: str = "IP", inode: int = 4026532001) -> bytes:
    return crossconnect_pb2.CrossConnect(
        id=xcon_id,
        payload=payload,
        source=end(f"{xcon_id}-src", f"s-{xcon_id}", inode),
        destination=end(f"{xcon_id}-dst", f"d-{xcon_id}", inode + 1),
    ).SerializeToString()


def monitor(first_seq: int = 0) -> tuple[MonitorActor, list[tuple[int, bytes]]]:
    events: list[tuple[int, bytes]] = []
    return MonitorActor(lambda seq, event, _: events.append((seq, event)), first_seq), events


def test_monitor_keeps_and_lists_the_bytes_it_was_given() -> None:
    actor, events = monitor()
    a, b = xc("a"), xc("b")
    actor.handle(XconnUpdated(xcon=a))
    actor.handle(XconnUpdated(xcon=b))
    actor.handle(XconnDeleted(xcon=b))
    listed = actor.handle(ListXconns())
    assert listed == [a] and listed[0] is a  # no copy, no re-serialization
    kinds = [crossconnect_pb2.CrossConnectEvent.FromString(e).type for _, e in events]
    assert [seq for seq, _ in events] == [1, 2, 3] and kinds == [UPDATE, UPDATE, DELETE]
    seq, initial = actor.handle(Subscribe(sub_id="s"))
    event = crossconnect_pb2.CrossConnectEvent.FromString(initial)
    assert seq == 3 and event.type == crossconnect_pb2.INITIAL_STATE_TRANSFER
    assert dict(event.cross_connects) == {"a": crossconnect_pb2.CrossConnect.FromString(a)}


def test_monitor_reload_does_not_undo_what_changed_before_it() -> None:
    actor, _ = monitor(first_seq=1_000_000)  # a replacement, as the Supervisor starts one
    a_new, b, c = xc("a", "ETHERNET"), xc("b"), xc("c")
    actor.handle(XconnUpdated(xcon=a_new))  # changed after the Store was read
    actor.handle(XconnUpdated(xcon=b))
    actor.handle(XconnDeleted(xcon=b))  # closed after the Store was read
    actor.handle(Reload(xcons=[xc("a"), b, c]))
    assert sorted(actor.handle(ListXconns())) == sorted([a_new, c])
    assert actor.touched is None  # nothing more to remember once the Reload is in


def test_monitor_first_of_a_forwarder_remembers_no_ids() -> None:
    actor, _ = monitor()
    for i in range(100):
        actor.handle(XconnUpdated(xcon=xc(f"x{i}")))
        actor.handle(XconnDeleted(xcon=xc(f"x{i}")))
    assert actor.touched is None and actor.handle(ListXconns()) == []


def test_live_ends_remembers_only_the_last_pass() -> None:
    cache = LiveEnds()
    a, b = xc("a", inode=10), xc("b", inode=20)
    assert cache.of([a, b]) == [local_end_names(a), local_end_names(b)]
    assert cache.of([a, b])[0] == ("a", (("source", 10, "s-a"), ("destination", 11, "d-a")))
    assert len(cache) == 2
    assert cache.of([b]) == [local_end_names(b)]
    assert len(cache) == 1  # "a" is closed: forgotten
    assert cache.of([]) == [] and len(cache) == 0


def test_monitor_hands_the_fan_out_the_bytes_it_keeps() -> None:
    """Each event comes with what it changed, as the Monitor's own bytes objects, so the
    Frontend's view of what subscribers were sent holds no second copy and parses nothing."""
    changes: list[dict[str, bytes | None]] = []
    actor = MonitorActor(lambda seq, event, changed: changes.append(changed))
    a = xc("a")
    actor.handle(XconnUpdated(xcon=a))
    actor.handle(XconnDeleted(xcon=a))
    assert changes == [{"a": a}, {"a": None}] and changes[0]["a"] is a

"""Small pure helpers on serialized cross-connects, shared by several actors, and
:data:`LIVE_ENDS`, the one cache of what the periodic checks (pod liveness, metrics) read of
every live cross-connect."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from nsm_forwarder.drivers.plan import is_remote
from nsm_forwarder.proto import connection_pb2, crossconnect_pb2


def with_down(data: bytes, sides: list[str]) -> bytes | None:
    """The cross-connect with those ends' state set DOWN, or None if they already were."""
    xcon = crossconnect_pb2.CrossConnect.FromString(data)
    changed = False
    for side in sides:
        conn = getattr(xcon, side)
        if conn.state != connection_pb2.DOWN:
            conn.state = connection_pb2.DOWN
            changed = True
    return xcon.SerializeToString() if changed else None


#: (id, ((connection, netns inode, interface name), ...)) of a cross-connect's local ends
Ends = tuple[str, tuple[tuple[str, int, str], ...]]


def local_end_names(data: bytes) -> Ends:
    """(id, ((connection, netns inode, interface name), ...)) of the ends of a serialized
    cross-connect that live on this node."""
    xcon = crossconnect_pb2.CrossConnect.FromString(data)
    ends = []
    for side in ("source", "destination"):
        conn = getattr(xcon, side)
        if not conn.HasField("mechanism") or is_remote(conn):
            continue
        params = conn.mechanism.parameters
        inode = params.get("netnsInode", "")
        if inode.isdigit():
            ends.append((side, int(inode), params.get("name", "")))
    return xcon.id, tuple(ends)


def local_ends(data: bytes) -> list[tuple[str, int]]:
    """(connection, netns inode) of each end of the cross-connect that lives on this node."""
    return [(side, inode) for side, inode, _ in local_end_names(data)[1]]


class LiveEnds:
    """:func:`local_end_names` of every live cross-connect, remembered from one pass over all of
    them to the next (the periodic checks make one every interval): a pass keeps the entries
    it used and drops the rest, so what is remembered is the live set, never a closed
    cross-connect. Keys are the bytes the Monitor holds (ListXconns hands out its own objects),
    so the cache holds no copy of them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[bytes, Ends] = {}

    def of(self, xcons: Sequence[bytes]) -> list[Ends]:
        """The ends of each of ``xcons`` (every live cross-connect), in order."""
        with self._lock:
            known = self._known
        kept: dict[bytes, Ends] = {}
        found = []
        for data in xcons:
            ends = known.get(data)
            if ends is None:
                ends = local_end_names(data)
            kept[data] = ends
            found.append(ends)
        with self._lock:
            self._known = kept
        return found

    def __len__(self) -> int:
        return len(self._known)


#: the cache of the main process (check_pods and the metrics poller use it)
LIVE_ENDS = LiveEnds()

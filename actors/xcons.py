"""Small pure helpers on serialized cross-connects, shared by several actors."""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=65536)
def local_end_names(data: bytes) -> tuple[str, tuple[tuple[str, int, str], ...]]:
    """(id, ((connection, netns inode, interface name), ...)) of the ends of a serialized
    cross-connect that live on this node; remembered per distinct cross-connect, since the
    periodic checks ask for every live one every interval."""
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

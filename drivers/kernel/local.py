"""Local cross-connects: one veth pair across the two pod network namespaces.

The pair is created directly across the namespaces (the source end in the source pod, the peer in
the destination pod), with the plan's MTU and our tag (alias ``nsm:<forwarder>/<id>:<side>``,
group :data:`~nsm_forwarder.drivers.base.TAG_GROUP`); both ends are brought up and get their
addresses, routes (main table) and permanent neighbours. Every step records its undo; a failure
unwinds all of them and raises the first error, so a failed apply leaves nothing behind.
"""

from __future__ import annotations

import errno
import functools
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nsm_forwarder.drivers.base import TAG_GROUP, Applied, build_group, tag
from nsm_forwarder.drivers.errors import DriverError, ForwarderError, InvalidRequest
from nsm_forwarder.drivers.linux import addressing
from nsm_forwarder.drivers.linux.ends import make_room, open_pods, remove_end_in
from nsm_forwarder.drivers.linux.links import ignore_gone, step
from nsm_forwarder.drivers.linux.pyroute import NetlinkError
from nsm_forwarder.drivers.linux.rtnl import Rtnl
from nsm_forwarder.drivers.linux.sockets import NetnsSockets
from nsm_forwarder.drivers.linux.undo import UndoStack, rolled_back
from nsm_forwarder.drivers.shapes import SIDES, LocalPlan, check_inode, kernel_end

log = logging.getLogger(__name__)

#: ifindexes are drawn from here (the kernel numbers from 1 up; a clash is retried)
FIRST_INDEX, LAST_INDEX = 1 << 20, 1 << 30
MAX_TRIES = 5
_RANDOM = random.SystemRandom()


def apply_local(sockets: NetnsSockets, plan: LocalPlan) -> Applied:
    src, dst = kernel_end(plan.src), kernel_end(plan.dst)
    started = time.perf_counter()
    pods = open_pods(sockets, src.inode, dst.inode)
    with rolled_back(f"apply {plan.id}") as undo:
        src_index, dst_index = _build(plan, sockets, pods, undo)
    log.debug("applied %s in %.1f ms", plan.id, (time.perf_counter() - started) * 1e3)
    return {
        "id": plan.id,
        "kind": "local",
        "src": {"inode": src.inode, "name": src.name, "ifindex": src_index},
        "dst": {"inode": dst.inode, "name": dst.name, "ifindex": dst_index},
    }


def _build(
    plan: LocalPlan, sockets: NetnsSockets, pods: dict[int, tuple[int, Any]], undo: UndoStack
) -> tuple[int, int]:
    """Four kinds of message, none of them a look-up: the pair with both ifindexes chosen here
    (its source end up), each end's tag (the peer up with it), then addresses, routes and
    neighbours, on the namespaces' raw rtnetlink sockets."""
    xid, src, dst = plan.id, kernel_end(plan.src), kernel_end(plan.dst)
    rt_src, rt_dst = sockets.raw(src.inode), sockets.raw(dst.inode)
    what = f"create veth {src.name} (netns {src.inode}) / {dst.name} (netns {dst.inode})"
    with step(what):
        src_index, dst_index = _create_pair(plan, pods, rt_src, what)
    # deleting one end deletes the pair (and every address, route, neighbour on it)
    undo.push(
        f"delete veth {src.name} in netns {src.inode}",
        ignore_gone(lambda: rt_src.del_link(src_index)),
    )
    with step(f"tag {src.name} in netns {src.inode}"):
        rt_src.set_link(src_index, alias=tag(xid, "src"), group=TAG_GROUP)
    with step(f"tag and set up {dst.name} in netns {dst.inode}"):
        rt_dst.set_link(dst_index, alias=tag(xid, "dst"), up=True, group=TAG_GROUP)
    addressing.configure(rt_src, src, src_index, undo)
    addressing.configure(rt_dst, dst, dst_index, undo)
    return src_index, dst_index


def _create_pair(
    plan: LocalPlan, pods: dict[int, tuple[int, Any]], rt_src: Rtnl, what: str
) -> tuple[int, int]:
    """Create the veth pair under random free ifindexes; (source, destination) ifindex.

    A name already taken (EEXIST) is looked at only then: a foreign interface refuses the
    request, a stale one of this id is deleted and the pair made again."""
    src, dst = kernel_end(plan.src), kernel_end(plan.dst)
    for attempt in range(MAX_TRIES):
        indexes = (
            _RANDOM.randrange(FIRST_INDEX, LAST_INDEX),
            _RANDOM.randrange(FIRST_INDEX, LAST_INDEX),
        )
        try:
            rt_src.new_veth(
                src.name,
                indexes[0],
                dst.name,
                indexes[1],
                pods[dst.inode][0],
                mtu=plan.mtu,
                group=build_group(plan.id),
            )
            return indexes
        except NetlinkError as exc:
            if exc.code == errno.EEXIST and attempt == 0:
                make_room(plan.id, (pods[src.inode][1], src), (pods[dst.inode][1], dst))
            elif exc.code != errno.EBUSY:  # EBUSY: an ifindex is taken; draw again
                raise
    raise DriverError(f"{what}: no free interface index after {MAX_TRIES} tries")


def remove_local(sockets: NetnsSockets, record: dict[str, Any]) -> None:
    """Remove both ends an applied record (or a plan, maybe half applied) of a local
    cross-connect names; missing interfaces or namespaces are not errors."""
    xid: str = record["id"]
    started = time.perf_counter()
    for side in SIDES:
        end = record.get(side)
        if not isinstance(end, dict):
            raise InvalidRequest(f"applied record {xid}: {side} end missing")
        inode = check_inode(end.get("inode"), f"applied record {xid} {side} end")
        remove_end_in(sockets, inode, xid, side, end.get("name"), end.get("ifindex"))
    log.debug("removed %s in %.1f ms", xid, (time.perf_counter() - started) * 1e3)


@dataclass
class Tomb:
    """The ends of one batch of Closes in one namespace, moved into ``group`` (drawn for the
    batch) and deleted with it, by one kernel operation."""

    inode: int
    #: the namespace's fd (kept open by the driver's sockets while the batch is prepared)
    fd: int
    group: int
    #: (index of the record in the batch, ifindex of its end here)
    members: list[tuple[int, int]] = field(default_factory=list)


def mark_local_many(
    sockets: NetnsSockets, records: list[dict[str, Any]]
) -> tuple[list[Tomb], list[int]]:
    """Prepare the removal of many local cross-connects with one kernel deletion per namespace.

    Each pair goes from the namespace that holds the most ends of the batch (an endpoint's pod
    shared by many clients, say): its end there, found by ifindex and checked to carry our tag,
    is moved into a tombstone group drawn for this batch (deleting either end of a veth pair
    deletes the pair). Returns the tombs to delete (:func:`delete_tomb`) and the indexes of the
    records that cannot go that way (a namespace gone, an interface not found by its ifindex)
    and are to be removed one by one with :func:`remove_local`.
    """
    counts: Counter[int] = Counter()
    for record in records:
        counts.update(_end_inodes(record))
    by_ns: dict[int, list[tuple[int, str, int]]] = {}
    single: list[int] = []
    for i, record in enumerate(records):
        ends = [(side, e) for side, e in _ends(record) if isinstance(e.get("ifindex"), int)]
        if not ends:
            single.append(i)
            continue
        side, end = max(ends, key=lambda se: counts[se[1]["inode"]])
        by_ns.setdefault(end["inode"], []).append((i, side, end["ifindex"]))
    tomb_group = _RANDOM.randrange(1 << 24, 1 << 31)
    tombs = []
    for inode, entries in by_ns.items():
        try:
            fd, _ = sockets.get(inode)
            rt = sockets.raw(inode)
        except ForwarderError:
            single += [i for i, _, _ in entries]
            continue
        tomb = Tomb(inode, fd, tomb_group)
        for i, side, ifindex in entries:
            try:
                link = rt.get_link(ifindex)
                if link is None or not link.owned_as(tag(records[i]["id"], side)):
                    single.append(i)
                    continue
                rt.set_link(ifindex, group=tomb_group)
                tomb.members.append((i, ifindex))
            except NetlinkError:
                single.append(i)
        if tomb.members:
            tombs.append(tomb)
    return tombs, single


def delete_tomb(rt: Rtnl, tomb: Tomb) -> dict[int, Any]:
    """Delete a tomb's group with one RTM_DELLINK (the kernel's unregister wait is paid once
    for all of them); if the kernel refuses, its members one by one by ifindex. Returns the
    errors (``to_wire``) by record index; an end already gone is not an error. Needs nothing
    but ``rt``, a socket of the tomb's namespace, so it may run on any thread."""
    try:
        rt.del_group(tomb.group)
        return {}
    except NetlinkError as exc:
        log.debug("group delete in netns %d failed (%s); one by one", tomb.inode, exc)
    errors: dict[int, Any] = {}
    for i, ifindex in tomb.members:
        try:
            with step(f"delete interface {ifindex} in netns {tomb.inode}"):
                ignore_gone(functools.partial(rt.del_link, ifindex))()
        except ForwarderError as exc:
            errors[i] = exc.to_wire()
    return errors


def remove_local_singles(
    sockets: NetnsSockets, records: list[dict[str, Any]], indexes: list[int]
) -> dict[int, Any]:
    """:func:`remove_local` of the records at ``indexes``; their errors by index."""
    errors: dict[int, Any] = {}
    for i in indexes:
        try:
            remove_local(sockets, records[i])
        except ForwarderError as exc:
            errors[i] = exc.to_wire()
    return errors


def _ends(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(side, record[side]) for side in SIDES if isinstance(record.get(side), dict)]


def _end_inodes(record: dict[str, Any]) -> list[int]:
    return [end["inode"] for _, end in _ends(record) if isinstance(end.get("inode"), int)]

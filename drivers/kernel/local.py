"""Local cross-connects: one veth pair across the two pod network namespaces.

The pair is created directly across the namespaces (the source end in the source pod, the peer in
the destination pod), with the plan's MTU and our tag (alias ``nsm:<forwarder>/<id>:<side>``,
group :data:`~nsm_forwarder.drivers.base.TAG_GROUP`); both ends are brought up and get their
addresses, routes (main table) and permanent neighbours. Every step records its undo; a failure
unwinds all of them and raises the first error, so a failed apply leaves nothing behind.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from typing import Any

from nsm_forwarder.drivers.base import TAG_GROUP, Applied, tag
from nsm_forwarder.drivers.errors import DriverError, InvalidRequest
from nsm_forwarder.drivers.linux import addressing
from nsm_forwarder.drivers.linux.ends import make_room, open_pods, remove_end_in
from nsm_forwarder.drivers.linux.links import get_link, ignore_gone, step, to_forwarder_error
from nsm_forwarder.drivers.linux.undo import UndoStack
from nsm_forwarder.drivers.shapes import SIDES, LocalPlan, check_inode, kernel_end

log = logging.getLogger(__name__)


def apply_local(plan: LocalPlan) -> Applied:
    src, dst = kernel_end(plan.src), kernel_end(plan.dst)
    started = time.perf_counter()
    with ExitStack() as stack:
        pods = open_pods(stack, src.inode, dst.inode)
        ipr_src, ipr_dst = pods[src.inode][1], pods[dst.inode][1]
        make_room(plan.id, (ipr_src, src), (ipr_dst, dst))
        undo = UndoStack()
        try:
            src_index, dst_index = _build(plan, ipr_src, ipr_dst, pods[dst.inode][0], undo)
        except BaseException as exc:
            log.debug("apply %s failed (%s); rolling back %d steps", plan.id, exc, len(undo))
            undo.unwind()
            if isinstance(exc, Exception):
                raise to_forwarder_error(exc, f"apply {plan.id}") from exc
            raise
        undo.clear()
    log.debug("applied %s in %.1f ms", plan.id, (time.perf_counter() - started) * 1e3)
    return {
        "id": plan.id,
        "kind": "local",
        "src": {"inode": src.inode, "name": src.name, "ifindex": src_index},
        "dst": {"inode": dst.inode, "name": dst.name, "ifindex": dst_index},
    }


def _build(
    plan: LocalPlan, ipr_src: Any, ipr_dst: Any, fd_dst: int, undo: UndoStack
) -> tuple[int, int]:
    xid, src, dst = plan.id, kernel_end(plan.src), kernel_end(plan.dst)
    common: dict[str, Any] = {"group": TAG_GROUP}
    if plan.mtu:
        common["mtu"] = plan.mtu
    what = f"create veth {src.name} (netns {src.inode}) / {dst.name} (netns {dst.inode})"
    with step(what):
        # IFF_UP is fine on this end; on the peer it fails (ENOTCONN): brought up below
        ipr_src.link(
            "add",
            ifname=src.name,
            kind="veth",
            state="up",
            peer={"ifname": dst.name, "net_ns_fd": fd_dst, **common},
            **common,
        )
    # deleting one end deletes the pair (and every address, route, neighbour on it)
    undo.push(
        f"delete veth {src.name} in netns {src.inode}",
        ignore_gone(lambda: ipr_src.link("del", ifname=src.name)),
    )

    with step(f"look up new {src.name} in netns {src.inode}"):
        src_link = get_link(ipr_src, ifname=src.name)
    with step(f"look up new {dst.name} in netns {dst.inode}"):
        dst_link = get_link(ipr_dst, ifname=dst.name)
    if src_link is None or dst_link is None:
        raise DriverError(f"{what}: created veth end vanished")
    with step(f"tag {src.name} in netns {src.inode}"):
        ipr_src.link("set", index=src_link.index, ifalias=tag(xid, "src"))
    with step(f"tag and set up {dst.name} in netns {dst.inode}"):
        ipr_dst.link("set", index=dst_link.index, ifalias=tag(xid, "dst"), state="up")

    addressing.configure(ipr_src, src, src_link.index, undo)
    addressing.configure(ipr_dst, dst, dst_link.index, undo)
    return src_link.index, dst_link.index


def remove_local(record: dict[str, Any]) -> None:
    """Remove both ends an applied record (or a plan, maybe half applied) of a local
    cross-connect names; missing interfaces or namespaces are not errors."""
    xid: str = record["id"]
    started = time.perf_counter()
    for side in SIDES:
        end = record.get(side)
        if not isinstance(end, dict):
            raise InvalidRequest(f"applied record {xid}: {side} end missing")
        inode = check_inode(end.get("inode"), f"applied record {xid} {side} end")
        remove_end_in(inode, xid, side, end.get("name"), end.get("ifindex"))
    log.debug("removed %s in %.1f ms", xid, (time.perf_counter() - started) * 1e3)

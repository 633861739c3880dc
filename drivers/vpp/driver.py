"""VppDriver: cross-connects through VPP's binary API (vpp-papi), on the shared Linux layer.

Each end becomes one VPP interface (:mod:`.ends`: af_packet on a veth or a tap for a
kernel-interface end, a memif, or a VXLAN tunnel for the remote end), and the two are joined
by an L2 cross-connect in both directions. A plan is parsed once, here, and built from its typed
form. Every step records its undo, so a failure (a refused call, a dropped connection) leaves
nothing behind; the error names the call and VPP's error.

``remove`` trusts the applied record's ``sw_if_index`` only where the interface still carries
the record's tag; a plan (after an interrupted apply) is removed by a scan of VPP's interfaces
for the id's tags. ``observe`` rebuilds the picture from ``sw_interface_dump`` (VPP objects) and
the tagged Linux interfaces of every namespace; ``epoch`` names the VPP instance, so the
forwarder notices a VPP restart (which loses every object) and rebuilds.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from nsm_forwarder.drivers.base import Applied, Plan, parse_tag, remove_each, set_owner
from nsm_forwarder.drivers.errors import DriverError, ForwarderError, InvalidRequest
from nsm_forwarder.drivers.linux import netns
from nsm_forwarder.drivers.linux.egress import Egress, find_egress
from nsm_forwarder.drivers.linux.ends import remove_end_in
from nsm_forwarder.drivers.linux.links import ignore_gone, step
from nsm_forwarder.drivers.linux.node import NodeNetns
from nsm_forwarder.drivers.linux.sockets import NetnsSockets
from nsm_forwarder.drivers.linux.sweep import sweep_tagged, tagged_links
from nsm_forwarder.drivers.linux.undo import UndoStack, rolled_back
from nsm_forwarder.drivers.shapes import (
    KERNEL_INTERFACE,
    MEMIF,
    SIDES,
    End,
    LocalPlan,
    MemifEnd,
    RemotePlan,
    VxlanTunnel,
    check_id,
    parse_plan,
)
from nsm_forwarder.drivers.vpp import ends
from nsm_forwarder.drivers.vpp.api import NONE, VppApi, VppRefused
from nsm_forwarder.drivers.vpp.stats import VppCounters
from nsm_forwarder.drivers.vpp.uplink import ensure_uplink

log = logging.getLogger(__name__)

DEFAULT_API_SOCKET = "/run/vpp/api.sock"
DEFAULT_API_DIR = "/usr/share/vpp/api"
DEFAULT_STATS_SOCKET = "/run/vpp/stats.sock"
VHOST_NET = "/dev/vhost-net"
OTHER = {"src": "dst", "dst": "src"}
#: roles of the VPP interface facing a pod
POD_ROLES = ("afp", "tap", "memif")


class VppDriver:
    """The VPP data plane; see :class:`nsm_forwarder.drivers.base.Driver`."""

    name = "vpp"
    local_mechanisms = (MEMIF, KERNEL_INTERFACE)
    remote_mechanisms = ("VXLAN",)

    def __init__(self) -> None:
        self.node = NodeNetns()
        self.vpp = VppApi(DEFAULT_API_SOCKET, DEFAULT_API_DIR)
        self.counters = VppCounters(DEFAULT_STATS_SOCKET)
        self.sockets = NetnsSockets()
        self.ctx = ends.Context(self.vpp, self.node, self.sockets)
        self.egress: Egress | None = None
        self.uplink_name = ""
        #: (connection number, sw_if_index) of the uplink, made again after a reconnect
        self._uplink: tuple[int, int] | None = None

    # -- init ------------------------------------------------------------------------------

    def init(self, config: dict[str, Any]) -> dict[str, Any]:
        """Connect to VPP (bounded retries; one clear line naming the socket when it is not
        there) and find the egress interface; see :class:`~nsm_forwarder.drivers.base.Driver`.
        """
        if config.get("owner"):
            set_owner(str(config["owner"]))
        self.vpp = VppApi(
            str(config.get("vpp_api_socket") or DEFAULT_API_SOCKET),
            str(config.get("vpp_api_dir") or DEFAULT_API_DIR),
            name=f"nsm-{config.get('owner') or 'forwarder'}-{os.getpid()}",
            connect_timeout=float(config.get("vpp_connect_timeout") or 10.0),
            read_timeout=float(config.get("operation_timeout") or 5.0),
        )
        self.counters = VppCounters(str(config.get("vpp_stats_socket") or DEFAULT_STATS_SOCKET))
        use_tap = bool(config.get("vpp_allow_vhost", True)) and os.path.exists(VHOST_NET)
        self.ctx = ends.Context(
            self.vpp,
            self.node,
            self.sockets,
            use_tap=use_tap,
            vxlan_port=int(config.get("vxlan_port") or 4789),
        )
        self.uplink_name = str(config.get("vpp_uplink") or "")
        with netns.iproute_in(self.node.fd()) as ipr, step("find the egress interface"):
            self.egress = find_egress(ipr, str(config.get("src_ip") or ""))
        try:
            self.vpp.connect()
        except ForwarderError as exc:
            raise DriverError(f"the VPP driver cannot work here: {exc.message}") from None
        version = self.vpp.call("show_version")
        log.debug(
            "VPP %s at %s; kernel ends as %s",
            version.version,
            self.vpp.socket,
            "taps" if use_tap else "veth + af_packet",
        )
        return {
            "local": list(self.local_mechanisms),
            "remote": list(self.remote_mechanisms),
            "egress": self.egress.to_wire(),
            "vpp": str(version.version),
            "kernel_ends": "tap" if use_tap else "veth",
        }

    def epoch(self) -> str:
        """The identity of the VPP instance (changes when VPP restarts)."""
        return self.vpp.instance()

    # -- apply -----------------------------------------------------------------------------

    def apply(self, plan: Plan) -> Applied:
        typed = parse_plan(plan, kinds=("local", "vxlan"), mechanisms=(KERNEL_INTERFACE, MEMIF))
        started = time.perf_counter()
        with rolled_back(f"apply {typed.id}") as undo:
            if isinstance(typed, LocalPlan):
                built = self._apply_local(typed, undo)
            else:
                built = self._apply_remote(typed, undo)
        log.debug("applied %s in %.1f ms", typed.id, (time.perf_counter() - started) * 1e3)
        return {"id": typed.id, "kind": plan["kind"], "ends": built}

    def _apply_local(self, plan: LocalPlan, undo: UndoStack) -> list[dict[str, Any]]:
        a = self._pod_end(plan.id, plan.src, plan.mtu, undo)
        b = self._pod_end(plan.id, plan.dst, plan.mtu, undo)
        ends.xconnect(self.ctx, a["sw_if_index"], b["sw_if_index"], undo)
        return [a, b]

    def _apply_remote(self, plan: RemotePlan, undo: UndoStack) -> list[dict[str, Any]]:
        tunnel = plan.tunnel
        if not isinstance(tunnel, VxlanTunnel):
            raise InvalidRequest(f"the VPP driver cannot build a {plan.kind} tunnel")
        other = OTHER[plan.side]
        ends.vpp_tag(plan.id, other, "vxlan")  # refuse a too-long id before building anything
        a = self._pod_end(plan.id, plan.end, plan.mtu, undo)
        self._ensure_uplink()
        index = ends.build_vxlan(self.ctx, plan.id, other, tunnel, undo)
        ends.xconnect(self.ctx, a["sw_if_index"], index, undo)
        return [a, {"side": other, "role": "vxlan", "sw_if_index": index}]

    def _pod_end(self, xid: str, end: End | MemifEnd, mtu: int, undo: UndoStack) -> dict[str, Any]:
        if isinstance(end, MemifEnd):
            ends.vpp_tag(xid, end.side, "memif")
            index = ends.build_memif_end(self.ctx, xid, end, undo)
            return {"side": end.side, "role": "memif", "sw_if_index": index, "socket": end.socket}
        role = "tap" if self.ctx.use_tap else "afp"
        ends.vpp_tag(xid, end.side, role)
        index = ends.build_kernel_end(self.ctx, xid, end, mtu, undo)
        return {
            "side": end.side,
            "role": role,
            "sw_if_index": index,
            "inode": end.inode,
            "name": end.name,
        }

    def _ensure_uplink(self) -> int:
        if self._uplink is None or self._uplink[0] != self.vpp.connects:
            if self.egress is None:
                raise DriverError("the VPP driver was not initialised (no egress interface)")
            self.vpp.connect()
            index = ensure_uplink(self.vpp, self.node.fd(), self.egress, self.uplink_name)
            self._uplink = (self.vpp.connects, index)
        return self._uplink[1]

    # -- remove ----------------------------------------------------------------------------

    def remove(self, applied: Applied) -> None:
        """Remove what an applied record (or a plan, maybe half applied) names; idempotent."""
        if not isinstance(applied, dict):
            raise InvalidRequest("applied record is not a mapping")
        xid = check_id(applied.get("id"))
        started = time.perf_counter()
        objects = self._recorded(xid, applied) if "ends" in applied else self._scan(xid)
        for obj in objects:
            self._delete(xid, obj)
        for side, inode, name in _pod_ends(applied):
            remove_end_in(self.sockets, inode, xid, side, name, None)
        log.debug("removed %s in %.1f ms", xid, (time.perf_counter() - started) * 1e3)

    def remove_many(self, records: list[Applied]) -> list[Any]:
        return remove_each(self.remove, records)

    def _recorded(self, xid: str, applied: Applied) -> list[dict[str, Any]]:
        """The recorded VPP objects that still carry their tag (after a VPP restart the same
        index may belong to something else); if one does not, scan for the id's tags."""
        found = []
        for end in applied.get("ends") or []:
            want = ends.vpp_tag(xid, end["side"], end["role"])
            index = int(end["sw_if_index"])
            details = self.vpp.dump("sw_interface_dump", sw_if_index=index)
            if any(int(d.sw_if_index) == index and str(d.tag) == want for d in details):
                found.append({**end, "tag": want})
            else:
                return self._scan(xid)
        return found

    def _scan(self, xid: str) -> list[dict[str, Any]]:
        return [o for o in self._vpp_objects() if o["id"] == xid]

    def _vpp_objects(self) -> list[dict[str, Any]]:
        """Every VPP interface tagged as ours: id, side, role, sw_if_index, name, tag."""
        found = []
        for detail in self.vpp.dump("sw_interface_dump", sw_if_index=NONE):
            parsed = parse_tag(str(detail.tag))
            if parsed is None:
                continue
            xid, where = parsed
            side, _, role = where.partition(".")
            if side in SIDES and role in (*POD_ROLES, "vxlan"):
                found.append(
                    {
                        "id": xid,
                        "side": side,
                        "role": role,
                        "sw_if_index": int(detail.sw_if_index),
                        "name": str(detail.interface_name),
                        "tag": str(detail.tag),
                    }
                )
        return found

    def _delete(self, xid: str, obj: dict[str, Any]) -> None:
        index, role, side = int(obj["sw_if_index"]), obj["role"], obj["side"]
        with step(f"delete VPP {role} {index} of {xid}"):
            try:
                if role == "afp":
                    host = ends.host_name(xid, side)
                    ends.delete_af_packet(self.ctx, host)
                    ipr = self.sockets.keep(self.node.fd())
                    ignore_gone(lambda: ipr.link("del", ifname=host))()
                elif role == "tap":
                    self.vpp.call("tap_delete_v2", sw_if_index=index)
                elif role == "memif":
                    ends.delete_memif(self.ctx, index)
                elif role == "vxlan":
                    self._delete_vxlan(index)
            except VppRefused as exc:
                if exc.retval not in ends.GONE_RETVALS:
                    raise

    def _delete_vxlan(self, index: int) -> None:
        for t in self.vpp.dump("vxlan_tunnel_v2_dump", sw_if_index=index):
            if int(t.sw_if_index) != index:
                continue
            self.vpp.call(
                "vxlan_add_del_tunnel_v3",
                is_add=False,
                instance=int(t.instance),
                src_address=t.src_address,
                dst_address=t.dst_address,
                src_port=int(t.src_port),
                dst_port=int(t.dst_port),
                mcast_sw_if_index=int(t.mcast_sw_if_index),
                encap_vrf_id=int(t.encap_vrf_id),
                decap_next_index=int(t.decap_next_index),
                vni=int(t.vni),
                is_l3=False,
            )

    # -- observe ---------------------------------------------------------------------------

    def observe(self) -> list[dict[str, Any]]:
        """VPP objects and Linux interfaces of ours; a pod interface counts as present
        (``complete``) only while its VPP side exists too. A memif is VPP's alone: its entry
        has no namespace (``inode`` None) and stands for the pod end."""
        vpp_objects = self._vpp_objects()
        with_vpp = {(o["id"], o["side"]) for o in vpp_objects if o["role"] in POD_ROLES}
        found: list[dict[str, Any]] = []
        for o in vpp_objects:
            side = o["side"] if o["role"] == "memif" else f"{o['side']}.{o['role']}"
            found.append({**o, "side": side, "layer": "vpp", "inode": None, "ifindex": None})
        for inode, link, xid, where in tagged_links():
            entry = {
                "id": xid,
                "side": where,
                "inode": inode,
                "name": link.name,
                "ifindex": link.index,
                "layer": "linux",
            }
            if where in SIDES:
                entry["complete"] = (xid, where) in with_vpp
            found.append(entry)
        return found

    def sweep(self, found: list[dict[str, Any]]) -> int:
        """Delete orphans (``observe`` entries): VPP objects still carrying their tag, then the
        tagged Linux interfaces."""
        deleted = 0
        for entry in found:
            if entry.get("layer") != "vpp":
                continue
            index = int(entry["sw_if_index"])
            details = self.vpp.dump("sw_interface_dump", sw_if_index=index)
            if not any(str(d.tag) == entry["tag"] for d in details):
                continue
            self._delete(entry["id"], {**entry, "side": entry["side"].partition(".")[0]})
            deleted += 1
        deleted += sweep_tagged([e for e in found if e.get("layer") == "linux"])
        return deleted

    def stats(self, entries: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        """Counters of the VPP interface facing each ``{"key", "id", "side"}`` pod end."""
        wanted = {(e.get("id"), e.get("side")): e["key"] for e in entries}
        indexes = {
            wanted[(o["id"], o["side"])]: o["sw_if_index"]
            for o in self._vpp_objects()
            if o["role"] in POD_ROLES and (o["id"], o["side"]) in wanted
        }
        return self.counters.read(indexes) if indexes else {}


def _pod_ends(record: dict[str, Any]) -> list[tuple[str, int, str]]:
    """(side, inode, name) of the kernel-interface pod ends an applied record or plan names."""
    out = []
    candidates = list(record.get("ends") or [])
    for side in SIDES:
        if isinstance(record.get(side), dict):
            candidates.append({**record[side], "side": side})
    local = record.get("local")
    if isinstance(local, dict) and record.get("side") in SIDES:
        candidates.append({**local, "side": record["side"]})
    for end in candidates:
        inode, name = end.get("inode"), end.get("name")
        if isinstance(inode, int) and inode > 0 and isinstance(name, str) and name:
            out.append((str(end["side"]), inode, name))
    return out

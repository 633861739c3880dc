"""KernelDriver: cross-connects through the Linux kernel (netlink), on the shared Linux layer.

A plan is parsed once, here, into a typed plan (:func:`~nsm_forwarder.drivers.shapes.parse_plan`)
and handed down: local ones to :mod:`.local` (one veth pair across two pod namespaces), remote
ones (VXLAN, WireGuard) to :mod:`.remote`. Neither calls back up.

All netlink traffic goes through sockets opened inside the namespaces by a helper thread
(:func:`~nsm_forwarder.drivers.linux.netns.iproute_in`): no fork, and the calling thread never
changes namespace.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from nsm_forwarder.drivers.base import Applied, Plan, remove_each, set_owner
from nsm_forwarder.drivers.errors import InvalidRequest
from nsm_forwarder.drivers.kernel import wgselect
from nsm_forwarder.drivers.kernel.local import (
    Tomb,
    apply_local,
    delete_tomb,
    mark_local_many,
    remove_local,
    remove_local_singles,
)
from nsm_forwarder.drivers.kernel.remote import (
    DEFAULT_VXLAN_PORT,
    Underlay,
    apply_remote,
    remove_remote,
    stop_orphan_daemons,
)
from nsm_forwarder.drivers.linux import netns, pyroute
from nsm_forwarder.drivers.linux.egress import find_egress
from nsm_forwarder.drivers.linux.links import step
from nsm_forwarder.drivers.linux.node import NodeNetns
from nsm_forwarder.drivers.linux.rtnl import Rtnl
from nsm_forwarder.drivers.linux.sockets import NetnsSockets
from nsm_forwarder.drivers.linux.stats import read_stats
from nsm_forwarder.drivers.linux.sweep import sweep_tagged, tagged_links
from nsm_forwarder.drivers.shapes import REMOTE_KINDS, LocalPlan, parse_plan

log = logging.getLogger(__name__)

#: group deletes waiting in the kernel at once per worker: each is a thread blocked in one
#: RTM_DELLINK for the kernel's unregister wait (20-40 ms here, outside the kernel's rtnl
#: lock: creates go on meanwhile, and concurrent waits overlap)
DELETE_THREADS = 4


def preload() -> None:
    """Import now what the driver imports on first use (pyroute2's IPRoute and WireGuard): a
    worker's zygote calls this before it forks the workers, so they share those modules."""
    pyroute.preload()


class KernelDriver:
    """The kernel (netlink) data plane; see :class:`nsm_forwarder.drivers.base.Driver`."""

    name = "kernel"
    #: what it can build (``init`` leaves WIREGUARD out when no backend works here)
    local_mechanisms = ("KERNEL_INTERFACE",)
    remote_mechanisms = ("VXLAN", "WIREGUARD")

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.node = NodeNetns()
        #: what init found for tunnels (egress interface, VXLAN port, WireGuard backend)
        #: netlink sockets per namespace, kept between calls
        self.sockets = NetnsSockets()
        self.underlay = Underlay(self.node, self.sockets)
        #: where the group deletes of remove_many wait (started on first use)
        self._deleter: ThreadPoolExecutor | None = None

    # -- init ------------------------------------------------------------------------------

    def init(self, config: dict[str, Any]) -> dict[str, Any]:
        """See :class:`~nsm_forwarder.drivers.base.Driver`; keeps ``config`` for later calls.

        The namespace of the calling thread is the node namespace: remote tunnels keep their
        underlay there. Refuses (EgressNotFound, one line) when no interface of it carries
        ``src_ip``. Chooses the WireGuard backend (``wireguard_backend``, see :mod:`.wgselect`)
        and advertises WIREGUARD only when there is one.
        """
        self.config = dict(config)
        if config.get("owner"):
            set_owner(str(config["owner"]))
        under = self.underlay
        under.vxlan_port = int(config.get("vxlan_port") or DEFAULT_VXLAN_PORT)
        with netns.iproute_in(self.node.fd()) as ipr, step("find the egress interface"):
            egress = under.egress = find_egress(ipr, str(config.get("src_ip") or ""))
        log.debug(
            "egress interface %s (ifindex %d, mtu %d) carries %s",
            egress.ifname,
            egress.ifindex,
            egress.mtu,
            egress.ip,
        )
        with step("choose the WireGuard backend"):
            choice = wgselect.choose(str(config.get("wireguard_backend") or wgselect.AUTO))
        under.wireguard = choice.backend
        if choice.backend is None:
            log.debug("not offering WIREGUARD: %s", choice.why)
        else:
            log.debug("WIREGUARD tunnels use %s", choice.why)
        remote = [m for m in self.remote_mechanisms if m != "WIREGUARD" or choice.backend]
        return {
            "local": list(self.local_mechanisms),
            "remote": remote,
            "egress": egress.to_wire(),
            "wireguard": choice.backend,
            "remove_slots": DELETE_THREADS,
        }

    def epoch(self) -> str:
        """The kernel does not restart under a running forwarder: always the same."""
        return ""

    # -- apply / remove --------------------------------------------------------------------

    def apply(self, plan: Plan) -> Applied:
        typed = parse_plan(plan)
        if isinstance(typed, LocalPlan):
            return apply_local(self.sockets, typed)
        return apply_remote(self.underlay, typed)

    def remove(self, applied: Applied) -> None:
        if not isinstance(applied, dict) or not isinstance(applied.get("id"), str):
            raise InvalidRequest("applied record without an id")
        if applied.get("kind") in REMOTE_KINDS:
            remove_remote(self.underlay, applied)
        else:
            remove_local(self.sockets, applied)

    def remove_many(self, records: list[Applied]) -> Future[list[Any]]:
        """Local cross-connects in one kernel deletion per namespace; anything else one by one.

        The ends are marked here (:func:`.local.mark_local_many`), then the group deletes wait
        in the kernel on a thread of their own, with sockets of their own, while this worker
        serves other calls; the future is done when they are."""
        local = [i for i, r in enumerate(records) if r.get("kind") == "local"]
        others = [i for i, r in enumerate(records) if r.get("kind") != "local"]
        out: list[Any] = [None] * len(records)
        singles = remove_each(self.remove, [records[i] for i in others])
        for i, error in zip(others, singles, strict=True):
            out[i] = error
        batch = [records[i] for i in local]
        tombs, single = mark_local_many(self.sockets, batch)
        for j, error in remove_local_singles(self.sockets, batch, single).items():
            out[local[j]] = error
        done: Future[list[Any]] = Future()
        if not tombs:
            done.set_result(out)
            return done
        if self._deleter is None:
            self._deleter = ThreadPoolExecutor(DELETE_THREADS, thread_name_prefix="delete")
        jobs = [(Rtnl(netns.netlink_socket(t.fd)), t) for t in tombs]

        def finish(deleted: Future[dict[int, Any]]) -> None:
            try:
                for j, error in deleted.result().items():
                    out[local[j]] = error
            except BaseException as exc:  # a bug: the whole batch fails with it
                done.set_exception(exc)
                return
            done.set_result(out)

        self._deleter.submit(_delete_tombs, jobs).add_done_callback(finish)
        return done

    # -- observe ---------------------------------------------------------------------------

    def stats(self, entries: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
        """See :class:`~nsm_forwarder.drivers.base.Driver`."""
        return read_stats(self.sockets, entries)

    def sweep(self, found: list[dict[str, Any]]) -> int:
        """See :class:`~nsm_forwarder.drivers.base.Driver`.

        Deleting a WireGuard TUN ends its wireguard-go daemon by itself; the daemons of the
        swept ids are stopped explicitly as well, so none is left even if it had not noticed.
        """
        deleted = sweep_tagged(found)
        stop_orphan_daemons(self.underlay, found)
        return deleted

    def observe(self) -> list[dict[str, Any]]:
        return [
            {"id": xid, "side": side, "inode": inode, "name": link.name, "ifindex": link.index}
            for inode, link, xid, side in tagged_links()
        ]


def _delete_tombs(jobs: list[tuple[Rtnl, Tomb]]) -> dict[int, Any]:
    """On a delete thread: each tomb's group delete, each on its own fresh socket (closed
    after), so nothing is shared with the worker's main thread; the errors by record index."""
    errors: dict[int, Any] = {}
    try:
        for rt, tomb in jobs:
            errors.update(delete_tomb(rt, tomb))
    finally:
        for rt, _ in jobs:
            rt.close()
    return errors

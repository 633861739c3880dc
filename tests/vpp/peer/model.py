"""The object table the tests assert on, and the parts of VPP's interface life cycle that every
kind of interface shares.

Facts from VPP v26.06:

* sw_if_index comes from a vppinfra pool (``src/vppinfra/pool.h``): ``pool_get`` takes the
  *last* freed index (the free list is a stack) and otherwise appends; index 0 is ``local0``,
  made at start-up (``src/vnet/misc.c``, device class "local").
* ``vnet_delete_sw_interface`` (``src/vnet/interface.c``) clears the tag, brings the interface
  admin-down if any flag is set, then runs the add/del callbacks: ``l2_input_interface_add_del``
  (``src/vnet/l2/l2_input.c``) resets the interface *and the interface it xconnects to* to L3,
  the ip4/ip6 callbacks drop its addresses, ip-neighbor flushes its neighbours, and the stats
  segment renames its ``/if/names`` slot to ``deleted`` (``src/vnet/interface/stats.c``).
* counters of a new interface start at zero (``vnet_create_sw_interface_no_callbacks``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.vpp.peer.wire import IPAddress, IPInterface, IPNetwork

SIMPLE_COUNTERS = (
    "drops",
    "punt",
    "ip4",
    "ip6",
    "rx-no-buf",
    "rx-miss",
    "rx-error",
    "tx-error",
    "mpls",
)
COMBINED_COUNTERS = (
    "rx",
    "rx-unicast",
    "rx-multicast",
    "rx-broadcast",
    "tx",
    "tx-unicast",
    "tx-multicast",
    "tx-broadcast",
)
ETHERNET_MTU = 9000  # ethernet_main.default_mtu


class IndexPool:
    """A vppinfra pool's index allocation: LIFO reuse of freed indices, else append."""

    def __init__(self) -> None:
        self.length = 0
        self.free: list[int] = []

    def get(self) -> int:
        if self.free:
            return self.free.pop()
        self.length += 1
        return self.length - 1

    def put(self, index: int) -> None:
        self.free.append(index)

    def is_free(self, index: int) -> bool:
        return index >= self.length or index in self.free


@dataclass
class AfPacketInfo:
    host_if_name: str
    mode: str  # "ethernet" | "ip"
    flags: int = 0
    dev_instance: int = 0


@dataclass
class MemifInfo:
    socket_id: int
    id: int
    role: str  # "master" | "slave"
    mode: str  # "ethernet" | "ip"
    zero_copy: bool
    secret: str
    rx_queues: int
    tx_queues: int
    ring_size: int
    buffer_size: int
    dev_instance: int = 0


@dataclass
class VxlanInfo:
    src: IPAddress
    dst: IPAddress
    vni: int
    src_port: int
    dst_port: int
    instance: int
    dev_instance: int
    decap_next_index: int
    mcast_sw_if_index: int
    encap_vrf_id: int
    is_l3: bool
    key: tuple[Any, ...] = ()


@dataclass
class TapInfo:
    id: int
    host_if_name: str
    host_namespace: str | None
    flags: int
    host_mac: str | None
    is_tun: bool
    created: bool = True  # made by the fake (so removed again by it)


@dataclass
class Interface:
    sw_if_index: int
    name: str
    dev_type: str  # the VPP device class name: local, af-packet, memif, VXLAN, tap
    kind: str  # local | af_packet | memif | vxlan | tap
    ethernet: bool = True
    mac: str | None = None
    admin_up: bool = False
    link_up: bool = False
    tag: str | None = None
    l2_xconnect: int | None = None  # the tx sw_if_index when in L2 xconnect mode
    addresses: list[IPInterface] = field(default_factory=list)
    mtu: int = ETHERNET_MTU
    af_packet: AfPacketInfo | None = None
    memif: MemifInfo | None = None
    vxlan: VxlanInfo | None = None
    tap: TapInfo | None = None

    @property
    def host_if_name(self) -> str | None:
        if self.af_packet is not None:
            return self.af_packet.host_if_name
        if self.tap is not None:
            return self.tap.host_if_name
        return None


@dataclass
class MemifSocket:
    socket_id: int
    filename: str
    ref_cnt: int = 0
    is_listener: bool = False
    ids: set[int] = field(default_factory=set)
    path: str | None = None  # the file a listener is bound to (None: abstract / not listening)
    listener: Any = None  # the listening socket while a master interface uses the file


@dataclass
class Route:
    table_id: int
    prefix: IPNetwork
    paths: list[dict[str, Any]]
    stats_index: int


@dataclass
class Neighbor:
    sw_if_index: int
    ip: IPAddress
    mac: str
    static: bool
    no_fib_entry: bool


class Model:
    """Everything VPP would lose on a crash."""

    def __init__(self, runtime_dir: str) -> None:
        self.runtime_dir = runtime_dir
        #: called as (interface, up) when admin state changes; the Linux side hooks in here
        self.on_admin: Callable[[Interface, bool], None] = lambda iface, up: None
        self.reset()

    def reset(self) -> None:
        self.pool = IndexPool()
        self.ifs: dict[int, Interface] = {}
        self.simple: dict[str, list[int]] = {n: [] for n in SIMPLE_COUNTERS}
        self.combined: dict[str, list[tuple[int, int]]] = {n: [] for n in COMBINED_COUNTERS}
        self.add_interface(name="local0", dev_type="local", kind="local", ethernet=False, mtu=0)
        self.memif_sockets: dict[int, MemifSocket] = {
            0: MemifSocket(0, f"{self.runtime_dir}/memif.sock")
        }
        self.memif_pool = IndexPool()
        self.af_packet_pool = IndexPool()
        self.vxlan_pool = IndexPool()
        self.vxlan_instances: set[int] = set()
        self.vxlan_keys: dict[tuple[Any, ...], int] = {}
        self.tap_ids: set[int] = set()
        self.tables: dict[int, set[int]] = {4: {0}, 6: {0}}
        self.routes: dict[tuple[int, IPNetwork], Route] = {}
        self.route_pool = IndexPool()
        self.neighbors: dict[tuple[int, IPAddress], Neighbor] = {}
        self.dirty = True  # the stats segment needs republishing

    # -- interfaces --------------------------------------------------------------------------
    def get(self, sw_if_index: int) -> Interface | None:
        return self.ifs.get(sw_if_index)

    def add_interface(self, **fields: Any) -> Interface:
        index = self.pool.get()
        iface = Interface(sw_if_index=index, **fields)
        self.ifs[index] = iface
        for values in self.simple.values():
            values.extend([0] * (self.pool.length - len(values)))
            values[index] = 0
        for pairs in self.combined.values():
            pairs.extend([(0, 0)] * (self.pool.length - len(pairs)))
            pairs[index] = (0, 0)
        self.dirty = True
        return iface

    def set_admin(self, iface: Interface, up: bool) -> None:
        iface.admin_up = up
        if iface.kind in ("af_packet", "vxlan", "tap"):
            iface.link_up = up  # their admin_up_down functions follow admin state
        self.on_admin(iface, up)

    def delete_interface(self, sw_if_index: int) -> None:
        iface = self.ifs[sw_if_index]
        iface.link_up = False
        iface.tag = None
        if iface.admin_up:
            self.set_admin(iface, False)
        if iface.l2_xconnect is not None:
            peer = self.ifs.get(iface.l2_xconnect)
            if peer is not None:
                peer.l2_xconnect = None
            iface.l2_xconnect = None
        iface.addresses.clear()
        for key in [k for k in self.neighbors if k[0] == sw_if_index]:
            del self.neighbors[key]
        del self.ifs[sw_if_index]
        self.pool.put(sw_if_index)
        self.dirty = True

    def by_name(self, name: str) -> Interface | None:
        return next((i for i in self.ifs.values() if i.name == name), None)

    # -- stats -------------------------------------------------------------------------------
    def if_names(self) -> list[str]:
        """``/if/names``: one slot per index ever allocated; freed ones read ``deleted``."""
        return [self.ifs[i].name if i in self.ifs else "deleted" for i in range(self.pool.length)]

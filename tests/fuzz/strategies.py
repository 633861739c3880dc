"""Hypothesis strategies: CrossConnect messages for one forwarder - valid ones, near-valid ones
(one field wrong) and garbage - and *cases* made of them (a few Requests and Closes, some sent
concurrently, some with the same id in flight at once).

Every value a pod end may name comes from a :class:`World` the test built: real pod namespaces,
the forwarder's own node namespace, a namespace that is gone, the inode of a plain file and of
nothing at all. So valid requests really build interfaces, and "an inode that points elsewhere"
is a real inode of something that is not a pod.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from nsm_forwarder.proto import connection_pb2, connectioncontext_pb2, crossconnect_pb2

KERNEL = "KERNEL_INTERFACE"
#: a few ids, so that cases reuse them (updates, closes of known ids, names that clash)
IDS = ("fz0", "fz1", "fz2", "fz3")
#: ASCII names a pod end may get; short, so that ids compete for them
NAMES = ("fa", "fb", "fc", "nsm0", "nsm1", "x")


@dataclass(frozen=True)
class World:
    pods: tuple[int, ...]  # inodes of the pods the test made
    node_inode: int  # the forwarder's own (node) namespace: not a pod
    gone_inode: int  # a namespace that existed and was deleted
    file_inode: int  # a plain file's inode
    node_ip: str  # the forwarder's underlay address (NSM_FORWARDER_SRC_IP)
    peer_ip: str  # the other node's
    wg_keys: tuple[tuple[str, str], ...] = field(default=())  # (private, public), base64


@dataclass(frozen=True)
class Op:
    kind: str  # "request" | "close" | "raw" (bytes that may not even parse)
    xcon: crossconnect_pb2.CrossConnect | None
    raw: bytes = b""
    #: the client's deadline; a short one gives up while the forwarder works on
    timeout: float = 30.0

    @property
    def gives_up(self) -> bool:
        return self.timeout < 1.0


@dataclass(frozen=True)
class Case:
    #: each group is sent concurrently; groups one after the other
    groups: tuple[tuple[Op, ...], ...]
    label: str = ""

    def ops(self) -> list[Op]:
        return [op for group in self.groups for op in group]


# --- values ------------------------------------------------------------------------------------

odd_text = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "\0",
            "a\0b",
            "..",
            ".",
            "a/b",
            "a:b",
            "a b",
            "eth%d",
            "tab\t",
            "nl\n",
            "é",
            "\u200b",
            "\u202e",
            "ñsm",
            "💥",
            "\x7f",
            "x" * 15,
            "x" * 16,
            "x" * 300,
            "€" * 5,
            "lo",
        ]
    ),
    st.text(max_size=20),
)
big_numbers = st.sampled_from(
    [
        "-1",
        "0",
        "00",
        "-0",
        "+5",
        " 5",
        "5 ",
        "5\n",
        "1e3",
        "0x10",
        "1_000",
        "٣",
        "²",
        "3.5",
        str(2**31),
        str(2**32),
        str(2**63 - 1),
        str(2**63),
        str(2**64 - 1),
        str(2**64),
        str(2**64 + 1),
        str(-(2**63) - 1),
        "9" * 30,
        "9" * 5000,
    ]
)
cidrs = st.one_of(
    st.sampled_from(
        [
            "",
            "10.9.0.1/30",
            "10.9.0.2/30",
            "10.9.0.1",
            "10.9.0.1/33",
            "10.9.0.1/-1",
            "10.9.0.1/ 30",
            "300.1.1.1/24",
            "fd00::1/64",
            "fd00::1/129",
            "fe80::1%eth0/64",
            "::/0",
            "0.0.0.0/0",
            "224.0.0.1/4",
            "10.9.0.1/30\0",
            "not an address",
            "1.2.3.4/24/8",
        ]
    ),
    odd_text,
)
macs = st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:0G", "", "ff:ff:ff:ff:ff:ff", "0"])


@st.composite
def inodes(draw: st.DrawFn, world: World) -> str:
    """A netnsInode value: mostly a pod; sometimes something else, or not a number."""
    return draw(
        st.one_of(
            st.sampled_from([str(i) for i in world.pods]),
            st.sampled_from(
                [
                    str(world.node_inode),
                    str(world.gone_inode),
                    str(world.file_inode),
                    "/proc/1/ns/net",
                    "/var/run/netns/../../proc/self/ns/net",
                    "1",
                ]
            ),
            big_numbers,
            st.integers(min_value=0, max_value=2**64).map(str),
        )
    )


@st.composite
def names(draw: st.DrawFn) -> str:
    return draw(st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES), odd_text))


@st.composite
def ids(draw: st.DrawFn) -> str:
    return draw(
        st.one_of(st.sampled_from(IDS), st.sampled_from(IDS), st.sampled_from(IDS), odd_text)
    )


@st.composite
def parameters(draw: st.DrawFn, base: dict[str, str]) -> dict[str, str]:
    """``base``, maybe with a key dropped, a value replaced by garbage, and extra keys."""
    params = dict(base)
    spoil: bool = draw(st.booleans())
    if params and spoil:
        mode = draw(st.sampled_from(["drop", "odd", "number"]))
        key = draw(st.sampled_from(sorted(params)))
        if mode == "drop":
            del params[key]
        else:
            params[key] = draw(odd_text if mode == "odd" else big_numbers)
    extra = draw(
        st.sampled_from(["none", "none", "none", "some", "huge", "big value"]),
    )
    if extra == "some":
        params.update(draw(st.dictionaries(odd_text, odd_text, max_size=4)))
    elif extra == "huge":
        params.update({f"k{i}": "v" * 10 for i in range(draw(st.integers(100, 5000)))})
    elif extra == "big value":
        params[draw(st.sampled_from(["name", "junk", "netnsInode"]))] = "y" * draw(
            st.integers(1000, 200_000)
        )
    return params


@st.composite
def contexts(draw: st.DrawFn) -> connectioncontext_pb2.ConnectionContext:
    ip = connectioncontext_pb2.IPContext(
        src_ip_addr=draw(st.sampled_from(["10.9.0.1/30", "10.9.0.1/30", "fd09::1/64"]) | cidrs),
        dst_ip_addr=draw(st.sampled_from(["10.9.0.2/30", "10.9.0.2/30", "fd09::2/64"]) | cidrs),
    )
    for route in draw(st.lists(cidrs | st.sampled_from(["10.99.0.0/16"]), max_size=3)):
        ip.src_routes.add(prefix=route)
    for route in draw(st.lists(cidrs | st.sampled_from(["10.98.0.0/16"]), max_size=3)):
        ip.dst_routes.add(prefix=route)
    for _ in range(draw(st.integers(0, 2))):
        ip.ip_neighbors.add(ip=draw(cidrs), hardware_address=draw(macs))
    return connectioncontext_pb2.ConnectionContext(ip_context=ip)


# --- messages ----------------------------------------------------------------------------------

MECH_TYPES = st.sampled_from(
    [KERNEL] * 8 + ["MEMIF", "VXLAN", "WIREGUARD", "SRV6", "VHOST_INTERFACE", "", "kernel"]
)


@st.composite
def local_end(draw: st.DrawFn, world: World, conn_id: str) -> connection_pb2.Connection:
    mech = draw(MECH_TYPES)
    base = {"name": draw(names()), "netnsInode": draw(inodes(world))}
    if mech == "MEMIF":
        base.update(socketfile=draw(odd_text | st.just("nsm0/memif.sock")), workspace="ws")
    conn = connection_pb2.Connection(
        id=conn_id,
        network_service=draw(st.sampled_from(["svc", "svc", "svc", ""]) | odd_text),
        mechanism=connection_pb2.Mechanism(type=mech, parameters=draw(parameters(base))),
        state=draw(st.sampled_from([connection_pb2.UP] * 4 + [connection_pb2.DOWN])),
    )
    if draw(st.integers(0, 9)) == 0:  # one segment, maybe an index beyond it
        conn.path.path_segments.add(name="nsmd", id=conn_id)
        conn.path.index = draw(st.sampled_from([0, 0, 1, 2**32 - 1]))
    return conn


@st.composite
def remote_end(
    draw: st.DrawFn, world: World, conn_id: str, outgoing: bool
) -> connection_pb2.Connection:
    mech = draw(st.sampled_from(["VXLAN", "VXLAN", "WIREGUARD", KERNEL, "SRV6", ""]))
    src, dst = (world.node_ip, world.peer_ip) if outgoing else (world.peer_ip, world.node_ip)
    ips = st.sampled_from(["127.0.0.1", "::1", "0.0.0.0", "224.0.0.1", "fe80::1%1"]) | odd_text
    base = {
        "src_ip": draw(st.sampled_from([src] * 4) | ips),
        "dst_ip": draw(st.sampled_from([dst] * 4) | ips),
    }
    if mech == "VXLAN":
        base["vni"] = draw(st.sampled_from(["7", "16777215"]) | big_numbers)
    elif mech == "WIREGUARD" and world.wg_keys:
        (sp, sk), (dp, dk) = draw(st.permutations(world.wg_keys).map(lambda k: k[:2]))
        base.update(
            src_port="51820",
            dst_port="51821",
            src_private_key=sp,
            src_public_key=sk,
            dst_private_key=dp,
            dst_public_key=dk,
        )
    conn = connection_pb2.Connection(
        id=conn_id,
        network_service="svc",
        mechanism=connection_pb2.Mechanism(type=mech, parameters=draw(parameters(base))),
    )
    for i in range(draw(st.sampled_from([2, 2, 2, 3]))):
        conn.path.path_segments.add(name=f"nsmd-{i}", id=f"{conn_id}-{i}")
    conn.path.index = draw(st.sampled_from([1, 1, 0, 5]))
    return conn


@st.composite
def xcons(draw: st.DrawFn, world: World, xid: str | None = None) -> crossconnect_pb2.CrossConnect:
    """Any cross-connect: local (mostly) or remote, valid or not."""
    xid = draw(ids()) if xid is None else xid
    shape = draw(st.sampled_from(["local"] * 6 + ["outgoing", "incoming", "both remote", "bare"]))
    xcon = crossconnect_pb2.CrossConnect(
        id=xid, payload=draw(st.sampled_from(["IP"] * 6 + ["ETHERNET", ""]) | odd_text)
    )
    if shape == "bare":
        return xcon  # no ends at all
    ctx = draw(contexts())
    if shape == "local":
        ends = (draw(local_end(world, f"{xid}-s")), draw(local_end(world, f"{xid}-d")))
    elif shape == "outgoing":
        ends = (draw(local_end(world, f"{xid}-s")), draw(remote_end(world, f"{xid}-r", True)))
    elif shape == "incoming":
        ends = (draw(remote_end(world, f"{xid}-r", False)), draw(local_end(world, f"{xid}-d")))
    else:
        ends = (draw(remote_end(world, "r1", True)), draw(remote_end(world, "r2", False)))
    for conn in ends:
        if draw(st.integers(0, 4)):
            conn.context.CopyFrom(ctx)
    xcon.source.CopyFrom(ends[0])
    xcon.destination.CopyFrom(ends[1])
    return xcon


@st.composite
def valid_local(draw: st.DrawFn, world: World, xid: str) -> crossconnect_pb2.CrossConnect:
    """A local KERNEL_INTERFACE cross-connect the forwarder must build (pods distinct or not)."""
    src_pod, dst_pod = draw(st.sampled_from(world.pods)), draw(st.sampled_from(world.pods))
    src_name = draw(st.sampled_from(NAMES))
    dst_name = draw(st.sampled_from([n for n in NAMES if src_pod != dst_pod or n != src_name]))
    ctx = connectioncontext_pb2.ConnectionContext(
        ip_context=connectioncontext_pb2.IPContext(
            src_ip_addr="10.9.0.1/30", dst_ip_addr="10.9.0.2/30"
        )
    )

    def conn(cid: str, name: str, inode: int) -> connection_pb2.Connection:
        return connection_pb2.Connection(
            id=cid,
            network_service="svc",
            mechanism=connection_pb2.Mechanism(
                type=KERNEL, parameters={"name": name, "netnsInode": str(inode)}
            ),
            context=ctx,
        )

    return crossconnect_pb2.CrossConnect(
        id=xid,
        payload="IP",
        source=conn(f"{xid}-s", src_name, src_pod),
        destination=conn(f"{xid}-d", dst_name, dst_pod),
    )


garbage_bytes = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"\x0a\x03\xff\xfe\xfd",  # id: invalid UTF-8
            b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
            b"\x12\x02\x0a",  # a truncated nested message
            b"\x08" + b"\xff" * 10 + b"\x01",  # an over-long varint
        ]
    ),
)


@st.composite
def ops(draw: st.DrawFn, world: World) -> Op:
    kind = draw(st.sampled_from(["request"] * 6 + ["close"] * 2 + ["raw"]))
    if kind == "raw":
        return Op("raw", None, raw=draw(garbage_bytes))
    if draw(st.integers(0, 2)) == 0:
        xcon = draw(valid_local(world, draw(st.sampled_from(IDS))))
    else:
        xcon = draw(xcons(world))
    return Op(kind, xcon)


@st.composite
def same_id_burst(draw: st.DrawFn, world: World) -> tuple[Op, ...]:
    """2 to 6 concurrent Requests of one id that differ in their names (some clients give up,
    maybe a Close among them): afterwards the id owns one set, or none."""
    xid = draw(st.sampled_from(IDS))
    a, b = draw(st.sampled_from(world.pods)), draw(st.sampled_from(world.pods))
    count = draw(st.integers(2, 6))
    burst = []
    for i in range(count):
        base = draw(valid_local(world, xid))
        base.source.mechanism.parameters.update(name=f"b{i}s", netnsInode=str(a))
        base.destination.mechanism.parameters.update(name=f"b{i}d", netnsInode=str(b))
        timeout = draw(st.sampled_from([30.0, 30.0, 30.0, 0.005, 0.02, 0.05]))
        burst.append(Op("request", base, timeout=timeout))
    if draw(st.integers(0, 3)) == 0:
        burst.insert(draw(st.integers(0, count)), Op("close", burst[0].xcon))
    return tuple(burst)


@st.composite
def cases(draw: st.DrawFn, world: World) -> Case:
    groups: list[tuple[Op, ...]] = []
    labels = []
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["one", "one", "one", "concurrent", "burst"]))
        labels.append(what)
        if what == "one":
            groups.append((draw(ops(world)),))
        elif what == "concurrent":
            groups.append(tuple(draw(st.lists(ops(world), min_size=2, max_size=5))))
        else:
            groups.append(draw(same_id_burst(world)))
    return Case(tuple(groups), "+".join(labels))

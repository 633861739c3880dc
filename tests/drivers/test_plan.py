"""Validation and planning of cross-connects (pure; no root)."""

from __future__ import annotations

import base64
from typing import Any

import msgpack
import pytest

from nsm_forwarder.drivers.errors import InvalidRequest
from nsm_forwarder.drivers.plan import describe, plan_from_xcon
from nsm_forwarder.proto import connection_pb2, connectioncontext_pb2, crossconnect_pb2


def xcon(**ip: Any) -> crossconnect_pb2.CrossConnect:
    ctx = connectioncontext_pb2.ConnectionContext(
        ip_context=connectioncontext_pb2.IPContext(
            src_ip_addr="10.0.0.1/30", dst_ip_addr="10.0.0.2/30", **ip
        )
    )

    def end(name: str, inode: int) -> connection_pb2.Connection:
        return connection_pb2.Connection(
            id=name,
            network_service="svc",
            mechanism=connection_pb2.Mechanism(
                type="KERNEL_INTERFACE", parameters={"name": name, "netnsInode": str(inode)}
            ),
            context=ctx,
        )

    return crossconnect_pb2.CrossConnect(
        id="x1", payload="IP", source=end("a0", 11), destination=end("b0", 22)
    )


def test_plan_local_builds_both_ends() -> None:
    plan = plan_from_xcon(
        xcon(
            dst_routes=[connectioncontext_pb2.Route(prefix="10.9.0.0/16")],
            src_routes=[connectioncontext_pb2.Route(prefix="10.8.0.0/16")],
            ip_neighbors=[
                connectioncontext_pb2.IpNeighbor(
                    ip="10.0.0.2", hardware_address="AA:bb:cc:dd:ee:ff"
                )
            ],
        ),
        mtu=1500,
    )
    assert plan["id"] == "x1" and plan["kind"] == "local" and plan["mtu"] == 1500
    assert plan["src"] == {
        "inode": 11,
        "name": "a0",
        "addr": "10.0.0.1/30",
        "routes": [{"prefix": "10.9.0.0/16", "gateway": "10.0.0.2"}],
        "neighbors": [{"ip": "10.0.0.2", "mac": "aa:bb:cc:dd:ee:ff"}],
    }
    assert plan["dst"]["addr"] == "10.0.0.2/30"
    assert plan["dst"]["routes"] == [{"prefix": "10.8.0.0/16", "gateway": "10.0.0.1"}]
    assert plan["dst"]["neighbors"] == []


def test_plan_route_without_reachable_gateway_is_on_link() -> None:
    x = xcon(dst_routes=[connectioncontext_pb2.Route(prefix="fd00::/64")])
    plan = plan_from_xcon(x, mtu=1500)
    assert plan["src"]["routes"] == [{"prefix": "fd00::/64", "gateway": ""}]


def test_plan_without_context_has_no_addresses() -> None:
    x = xcon()
    x.source.ClearField("context")
    x.destination.ClearField("context")
    plan = plan_from_xcon(x, mtu=1500)
    assert plan["src"]["addr"] == "" and plan["dst"]["addr"] == ""


def _mutate(path: str, value: object) -> crossconnect_pb2.CrossConnect:
    x = xcon()
    *parents, last = path.split(".")
    obj: object = x
    for p in parents:
        obj = getattr(obj, p)
    if isinstance(value, dict):
        getattr(obj, last).update(value)
    elif value is None:
        obj.ClearField(last)  # type: ignore[attr-defined]
    else:
        setattr(obj, last, value)
    return x


BAD = [
    ("id", "", "id: must not be empty"),
    ("payload", "", "payload: must not be empty"),
    ("source", None, "source: must be set"),
    ("destination.network_service", "", "destination.network_service: must not be empty"),
    ("source.mechanism.type", "MEMIF", "source.mechanism.type: 'MEMIF' is not supported"),
    ("source.mechanism.parameters", {"name": "abcdefghijklmnop"}, "the limit is 15"),
    ("destination.mechanism.parameters", {"name": "a/b"}, "not a valid interface name"),
    ("source.mechanism.parameters", {"name": ""}, "name: must not be empty"),
    ("source.mechanism.parameters", {"name": "eth%d"}, "must not contain '/', ':', '%'"),
    ("source.mechanism.parameters", {"name": "a\0b"}, "must be printable ASCII"),
    ("source.mechanism.parameters", {"name": "\u00f1sm"}, "must be printable ASCII"),
    ("source.mechanism.parameters", {"name": "a\u200bb"}, "must be printable ASCII"),
    ("id", "a\0b", "id: 'a\\x00b' contains control"),
    ("id", "x" * 129, "id: is 129 bytes, the limit is 128"),
    ("source.mechanism.parameters", {"netnsInode": str(2**64)}, "inode number in 1..1844"),
    ("source.mechanism.parameters", {"netnsInode": "9" * 5000}, "(5000 characters)"),
    ("source.mechanism.parameters", {"netnsInode": "\u0663"}, "must be a decimal inode"),
    ("source.mechanism.parameters", {"netnsInode": "5\n"}, "must be a decimal inode"),
    ("source.mechanism.parameters", {"netnsInode": "x12"}, "netnsInode: must be a decimal"),
    ("source.context.ip_context.src_ip_addr", "10.0.0.300/24", "not a valid addr/len"),
    ("source.context.ip_context.dst_ip_addr", "10.0.0.2", "must be in addr/len form"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[0] + str(b[1]) for b in BAD])
def test_plan_rejects_bad_input(path: str, value: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        plan_from_xcon(_mutate(path, value), mtu=1500)
    assert message in str(err.value)
    assert err.value.code == "INVALID_ARGUMENT"


def test_plan_rejects_bad_route_and_neighbour() -> None:
    x = xcon(dst_routes=[connectioncontext_pb2.Route(prefix="10.1.0.0/33")])
    with pytest.raises(InvalidRequest, match=r"dst_routes\[0\].prefix: '10.1.0.0/33'"):
        plan_from_xcon(x, mtu=1500)
    x = xcon(ip_neighbors=[connectioncontext_pb2.IpNeighbor(ip="10.0.0.9", hardware_address="zz")])
    with pytest.raises(InvalidRequest, match="hardware_address: 'zz' is not a MAC"):
        plan_from_xcon(x, mtu=1500)


def test_plan_rejects_same_name_in_same_namespace() -> None:
    x = xcon()
    x.destination.mechanism.parameters["netnsInode"] = "11"
    x.destination.mechanism.parameters["name"] = "a0"
    with pytest.raises(InvalidRequest, match="same interface name"):
        plan_from_xcon(x, mtu=1500)


# --- remote cross-connects --------------------------------------------------------------------

KEYS = {
    # any 32 bytes are a valid key for the planner; these are distinct and recognisable
    "src_private_key": base64.b64encode(bytes(range(32))).decode(),
    "src_public_key": base64.b64encode(bytes(range(32, 64))).decode(),
    "dst_private_key": base64.b64encode(bytes(range(64, 96))).decode(),
    "dst_public_key": base64.b64encode(bytes(range(96, 128))).decode(),
}


def remote(
    direction: str = "outgoing", mech: str = "VXLAN", **params: str | None
) -> crossconnect_pb2.CrossConnect:
    """A remote cross-connect as nsmd sends it to the client's (outgoing) or the endpoint's
    (incoming) node: the local connection has one path segment, the remote one two."""
    x = xcon(
        dst_routes=[connectioncontext_pb2.Route(prefix="10.9.0.0/16")],
        src_routes=[connectioncontext_pb2.Route(prefix="10.8.0.0/16")],
        ip_neighbors=[
            connectioncontext_pb2.IpNeighbor(ip="10.0.0.2", hardware_address="02:00:00:00:00:02")
        ],
    )
    base: dict[str, str | None] = {"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2"}
    if mech == "VXLAN":
        base["vni"] = "5"
    else:
        base.update(src_port="51820", dst_port="51821", **KEYS)
    base.update(params)
    far = x.destination if direction == "outgoing" else x.source
    near = x.source if direction == "outgoing" else x.destination
    far.mechanism.type = mech
    far.mechanism.parameters.clear()
    far.mechanism.parameters.update({k: v for k, v in base.items() if v is not None})
    far.path.index = 1
    far.path.path_segments.add(name="nsmd-a")
    far.path.path_segments.add(name="nsmd-b")
    near.path.path_segments.add(name="nsmd-a" if direction == "outgoing" else "nsmd-b")
    return x


def test_plan_remote_vxlan_outgoing_is_the_client_end() -> None:
    plan = plan_from_xcon(remote("outgoing"), mtu=16000, egress_mtu=9000)
    assert plan == {
        "id": "x1",
        "kind": "vxlan",
        "mtu": 9000 - 50,
        "direction": "outgoing",
        "side": "src",
        "local": {
            "inode": 11,
            "name": "a0",
            "addr": "10.0.0.1/30",
            "routes": [{"prefix": "10.9.0.0/16", "gateway": "10.0.0.2"}],
            "neighbors": [{"ip": "10.0.0.2", "mac": "02:00:00:00:00:02"}],
        },
        "tunnel": {"local_ip": "192.0.2.1", "remote_ip": "192.0.2.2", "vni": 5},
    }
    assert msgpack.unpackb(msgpack.packb(plan)) == plan
    assert describe(plan) == "vxlan outgoing a0@11 vni 5 192.0.2.1 -> 192.0.2.2"


def test_plan_remote_vxlan_incoming_is_the_endpoint_end() -> None:
    plan = plan_from_xcon(remote("incoming", vni="16777215"), mtu=16000)
    assert plan["direction"] == "incoming" and plan["side"] == "dst"
    assert plan["mtu"] == 1500 - 50  # the default egress MTU
    assert plan["local"] == {
        "inode": 22,
        "name": "b0",
        "addr": "10.0.0.2/30",
        "routes": [{"prefix": "10.8.0.0/16", "gateway": "10.0.0.1"}],
        "neighbors": [],  # as for local ends: neighbours go to the client side
    }
    assert plan["tunnel"] == {"local_ip": "192.0.2.2", "remote_ip": "192.0.2.1", "vni": 16777215}


def test_plan_remote_ipv6_underlay_overhead() -> None:
    v6 = {"src_ip": "fd00::1", "dst_ip": "FD00:0::2"}
    plan = plan_from_xcon(remote("outgoing", **v6), mtu=1, egress_mtu=1500)
    assert plan["mtu"] == 1430 and plan["tunnel"]["remote_ip"] == "fd00::2"
    plan = plan_from_xcon(remote("incoming", "WIREGUARD", **v6), mtu=1, egress_mtu=1500)
    assert plan["mtu"] == 1420
    assert describe(plan) == "wireguard incoming b0@22 [fd00::2]:51821 -> [fd00::1]:51820"
    huge = plan_from_xcon(remote("outgoing"), mtu=1, egress_mtu=65536 + 50 + 1)
    assert huge["mtu"] == 65535


@pytest.mark.parametrize(
    ("direction", "listen", "peer_port", "private", "public", "local_ip", "remote_ip"),
    [
        # spec §5.3's table
        ("incoming", 51821, 51820, "dst_private_key", "src_public_key", "192.0.2.2", "192.0.2.1"),
        ("outgoing", 51820, 51821, "src_private_key", "dst_public_key", "192.0.2.1", "192.0.2.2"),
    ],
)
def test_plan_remote_wireguard_parameters_by_direction(
    direction: str,
    listen: int,
    peer_port: int,
    private: str,
    public: str,
    local_ip: str,
    remote_ip: str,
) -> None:
    plan = plan_from_xcon(remote(direction, "WIREGUARD"), mtu=16000, egress_mtu=1500)
    assert plan["kind"] == "wireguard" and plan["mtu"] == 1440
    assert plan["tunnel"] == {
        "local_ip": local_ip,
        "remote_ip": remote_ip,
        "listen_port": listen,
        "remote_port": peer_port,
        "private_key": KEYS[private],
        "peer_public_key": KEYS[public],
    }
    assert plan["local"]["neighbors"] == []  # a layer-3 device has no neighbours
    text = describe(plan)
    assert text.startswith(f"wireguard {direction} ")
    assert not [k for k in KEYS.values() if k in text]


def test_plan_remote_wireguard_needs_only_the_keys_of_its_side() -> None:
    x = remote("outgoing", "WIREGUARD", dst_private_key=None, src_public_key=None)
    assert plan_from_xcon(x, mtu=1)["tunnel"]["private_key"] == KEYS["src_private_key"]
    with pytest.raises(InvalidRequest, match="src_private_key: must be set"):
        plan_from_xcon(remote("outgoing", "WIREGUARD", src_private_key=None), mtu=1)
    with pytest.raises(InvalidRequest, match="src_public_key: must be set"):
        plan_from_xcon(remote("incoming", "WIREGUARD", src_public_key=None), mtu=1)


def _both_remote() -> crossconnect_pb2.CrossConnect:
    x = remote("outgoing")
    x.source.path.path_segments.add(name="nsmd-c")
    return x


def _remote_end_kernel() -> crossconnect_pb2.CrossConnect:
    x = remote("outgoing")
    x.destination.mechanism.type = "KERNEL_INTERFACE"
    return x


def _local_end_vxlan() -> crossconnect_pb2.CrossConnect:
    x = remote("incoming")
    x.destination.mechanism.type = "VXLAN"
    return x


def _bad_local_route() -> crossconnect_pb2.CrossConnect:
    x = remote("incoming")
    x.destination.context.ip_context.src_routes.add(prefix="10.0.0.0/40")
    return x


BAD_KEY_31 = base64.b64encode(bytes(31)).decode()
BAD_REMOTE: list[tuple[str, crossconnect_pb2.CrossConnect, str]] = [
    ("both-remote", _both_remote(), "both source and destination are remote"),
    ("remote-kernel", _remote_end_kernel(), "'KERNEL_INTERFACE' is not supported for the remote"),
    ("local-vxlan", _local_end_vxlan(), "destination.mechanism.type: 'VXLAN' is not supported"),
    ("memif", remote("outgoing", "MEMIF"), "'MEMIF' is not supported for the remote end"),
    ("bad-src-ip", remote(src_ip="10.0.0.300"), "src_ip: '10.0.0.300' is not an IP address"),
    ("no-dst-ip", remote(dst_ip=""), "dst_ip: must be set"),
    ("any-ip", remote(dst_ip="0.0.0.0"), "dst_ip: '0.0.0.0' is not a unicast address"),
    ("mcast-ip", remote(src_ip="239.1.1.1"), "src_ip: '239.1.1.1' is not a unicast address"),
    ("families", remote(dst_ip="fd00::2"), "are not of the same IP family"),
    ("vni-0", remote(vni="0"), "vni: must be a decimal VNI in 1..16777215, got '0'"),
    ("vni-big", remote(vni="16777216"), "got '16777216'"),
    ("vni-hex", remote(vni="0x10"), "got '0x10'"),
    ("vni-neg", remote(vni="-1"), "got '-1'"),
    ("vni-missing", remote(vni=None), "got ''"),
    ("vni-unicode", remote(vni="٣"), "got '٣'"),
    ("port-0", remote("outgoing", "WIREGUARD", src_port="0"), "src_port: must be a decimal"),
    ("port-big", remote("incoming", "WIREGUARD", src_port="65536"), "got '65536'"),
    ("port-other", remote("incoming", "WIREGUARD", src_port="x"), "src_port: must be"),
    ("key-b64", remote("outgoing", "WIREGUARD", src_private_key="not base64!"), "not valid base64"),
    ("key-31", remote("incoming", "WIREGUARD", src_public_key=BAD_KEY_31), "got 31 bytes"),
    ("unused-key", remote("incoming", "WIREGUARD", src_private_key=BAD_KEY_31), "src_private_key"),
    ("bad-route", _bad_local_route(), "src_routes[1].prefix: '10.0.0.0/40'"),
]


@pytest.mark.parametrize(
    ("x", "message"), [b[1:] for b in BAD_REMOTE], ids=[b[0] for b in BAD_REMOTE]
)
def test_plan_rejects_bad_remote_input(x: crossconnect_pb2.CrossConnect, message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        plan_from_xcon(x, mtu=1500)
    assert message in str(err.value)
    assert err.value.code == "INVALID_ARGUMENT"


def test_plan_errors_never_quote_a_key() -> None:
    secret = base64.b64encode(b"s" * 31).decode()
    for key in ("src_private_key", "dst_private_key", "src_public_key"):
        for direction in ("incoming", "outgoing"):
            with pytest.raises(InvalidRequest) as err:
                plan_from_xcon(remote(direction, "WIREGUARD", **{key: secret}), mtu=1)
            assert secret not in str(err.value) and "not shown" in str(err.value)


def test_describe_local_plan_unchanged() -> None:
    assert describe(plan_from_xcon(xcon(), mtu=1500)) == "local a0@11 <-> b0@22"


@pytest.mark.parametrize(
    ("mech", "key", "value"),
    [
        ("VXLAN", "vni", str(2**64)),
        ("VXLAN", "vni", "9" * 5000),  # beyond what int() parses from text: no ValueError
        ("VXLAN", "vni", "-1"),
        ("VXLAN", "vni", "\u0663"),
        ("WIREGUARD", "src_port", str(2**70)),
        ("WIREGUARD", "dst_port", "+5"),
    ],
)
def test_plan_remote_numbers_out_of_range_are_invalid(mech: str, key: str, value: str) -> None:
    """Numbers beyond 64 bits (or not plain ASCII decimals) are INVALID_ARGUMENT, never an
    overflow further down (msgpack, the Store) and never a huge number in the message."""
    with pytest.raises(InvalidRequest, match=f"parameters.{key}: must be a decimal") as err:
        plan_from_xcon(remote("outgoing", mech, **{key: value}), mtu=1)
    assert len(str(err.value)) < 200

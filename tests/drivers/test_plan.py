"""Validation and planning of cross-connects (pure; no root)."""

from __future__ import annotations

import pytest

from nsm_forwarder.drivers.errors import InvalidRequest
from nsm_forwarder.drivers.plan import plan_from_xcon
from nsm_forwarder.proto import connection_pb2, connectioncontext_pb2, crossconnect_pb2


def xcon(**ip: object) -> crossconnect_pb2.CrossConnect:
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


def test_plan_rejects_remote_for_now() -> None:
    x = xcon()
    x.destination.path.path_segments.add(name="nsmd-a")
    x.destination.path.path_segments.add(name="nsmd-b")
    with pytest.raises(InvalidRequest, match="remote cross-connects"):
        plan_from_xcon(x, mtu=1500)


def test_plan_rejects_same_name_in_same_namespace() -> None:
    x = xcon()
    x.destination.mechanism.parameters["netnsInode"] = "11"
    x.destination.mechanism.parameters["name"] = "a0"
    with pytest.raises(InvalidRequest, match="same interface name"):
        plan_from_xcon(x, mtu=1500)

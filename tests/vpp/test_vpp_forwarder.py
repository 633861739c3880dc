"""A real forwarder with ``driver = "vpp"`` (inside node namespace A, beside its VPP) over its
gRPC socket: what it advertises, Request/update/Close, kill -9 and restart, a VPP restart, VPP
absent at start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import empty_pb2

from nsm_forwarder.drivers import base
from nsm_forwarder.proto import crossconnect_pb2
from tests.conftest import Node
from tests.helpers import Pods, local_xcon, wait_until
from tests.vpp.conftest import VppBed, fake_only
from tests.vpp.xcons import NSE_WS, memif_xcon

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def vpp_node(vpp_bed: VppBed, node_factory: Callable[..., Node]) -> Iterator[Node]:
    """A registered forwarder of driver vpp in node A, talking to the bed's VPP."""
    node = node_factory(
        netns=vpp_bed.underlay.a,
        **vpp_bed.forwarder_env(CROSS_CONNECT_LIVENESS_CHECK_INTERVAL="200ms"),
    )
    node.start()
    yield node


def tags(bed: VppBed) -> set[str]:
    return {str(d.tag) for d in bed.vpp.ours()}


def owner_tag(node: Node, xid: str, where: str) -> str:
    return f"{base.TAG_PREFIX}{node.forwarder.name}/{xid}:{where}"


def test_advertises_memif_kernel_and_vxlan(vpp_node: Node, vpp_bed: VppBed) -> None:
    update = vpp_node.registrar.mechanisms[vpp_node.forwarder.name]
    assert [m.type for m in update.local_mechanisms] == ["MEMIF", "KERNEL_INTERFACE"]
    assert [(m.type, dict(m.parameters)) for m in update.remote_mechanisms] == [
        ("VXLAN", {"src_ip": vpp_bed.underlay.a_ip})
    ]


def test_request_update_close(vpp_node: Node, vpp_bed: VppBed, pods: Pods) -> None:
    """kernel <-> memif over gRPC; the same id again with another interface name is an update
    (one set of objects, the new one); Close leaves nothing; WIREGUARD gets INVALID_ARGUMENT."""
    a, b = pods.make(), pods.make()
    os.makedirs(os.path.join(vpp_node.workdir, NSE_WS, "nse0"), exist_ok=True)
    stub = vpp_node.forwarder.stub()
    xcon = memif_xcon("fx1", a, b, "KERNEL_INTERFACE", "MEMIF")
    assert stub.Request(xcon, timeout=15) == xcon
    assert tags(vpp_bed) == {
        owner_tag(vpp_node, "fx1", "src.afp"),
        owner_tag(vpp_node, "fx1", "dst.memif"),
    }
    assert a.links() == ["nsm0"]
    again = memif_xcon("fx1", a, b, "KERNEL_INTERFACE", "MEMIF")
    again.source.mechanism.parameters["name"] = "nsm9"
    stub.Request(again, timeout=15)
    assert a.links() == ["nsm9"] and len(tags(vpp_bed)) == 2
    stub.Close(again, timeout=15)
    assert tags(vpp_bed) == set() and a.links() == []
    bad = local_xcon("fx2", a, b)
    bad.destination.mechanism.type = "WIREGUARD"
    with pytest.raises(grpc.RpcError) as err:
        stub.Request(bad, timeout=15)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'WIREGUARD' is not supported by the vpp driver" in str(err.value.details())


def test_kill9_restart_keeps_and_vpp_restart_rebuilds(
    vpp_node: Node, vpp_bed: VppBed, pods: Pods
) -> None:
    """kill -9 + restart: reconcile finds both cross-connects in VPP (nothing rebuilt) and the
    initial transfer has them. Then VPP restarts and loses everything: the forwarder notices,
    rebuilds both and reports each with an UPDATE."""
    a, b, c = pods.make(), pods.make(), pods.make()
    x1 = local_xcon("kr1", a, b)
    x2 = local_xcon("kr2", a, c, src_name="nsm1", src_ip="10.30.2.1/30", dst_ip="10.30.2.2/30")
    stub = vpp_node.forwarder.stub()
    stub.Request(x1, timeout=15)
    stub.Request(x2, timeout=15)
    before = tags(vpp_bed)
    assert len(before) == 4
    vpp_node.forwarder.kill()
    vpp_node.forwarder.start()
    vpp_node.wait_registered()
    events = vpp_node.forwarder.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=30)
    first = next(events)
    assert first.type == crossconnect_pb2.INITIAL_STATE_TRANSFER
    assert dict(first.cross_connects) == {"kr1": x1, "kr2": x2}
    assert "2 cross-connects restored (0 rebuilt" in vpp_node.forwarder.log()
    assert tags(vpp_bed) == before

    vpp_bed.vpp.restart()
    updated: set[str] = set()
    while updated != {"kr1", "kr2"}:
        event = next(events)
        if event.type == crossconnect_pb2.UPDATE:
            updated |= set(event.cross_connects)
    events.cancel()
    wait_until(lambda: tags(vpp_bed) == before, 10, "the objects rebuilt in the new VPP")
    assert "a data-plane restart" in vpp_node.forwarder.log()
    assert sorted(a.links()) == ["nsm0", "nsm1"]  # ifindexes are drawn at random
    stub = vpp_node.forwarder.stub()
    stub.Close(x1, timeout=15)
    stub.Close(x2, timeout=15)
    assert tags(vpp_bed) == set() and a.links() == []


@fake_only
def test_counters_reach_metrics_events_and_prometheus(
    vpp_bed: VppBed, node_factory: Callable[..., Node], pods: Pods
) -> None:
    """The VPP interface counters of each end, from the stats segment: in NSM metrics events
    (metrics-only UPDATE) and on /metrics, keyed SRC-<id> / DST-<id>."""
    vpp = vpp_bed.vpp
    node = node_factory(
        netns=vpp_bed.underlay.a,
        **vpp_bed.forwarder_env(
            METRICS_COLLECTOR_ENABLED="true", METRICS_COLLECTOR_REQUEST_PERIOD="200ms"
        ),
    ).start()
    a, b = pods.make(), pods.make()
    node.forwarder.stub().Request(local_xcon("mx", a, b), timeout=15)
    assert vpp.fake is not None
    src = vpp.fake.by_tag(owner_tag(node, "mx", "src.afp"))
    assert src is not None
    vpp.fake.set_counters(src.sw_if_index, rx_packets=3, rx_bytes=300, tx_packets=4, tx_bytes=400)
    events = node.forwarder.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=30)
    for event in events:
        if event.metrics and event.metrics.get("SRC-mx") is not None:
            got = dict(event.metrics["SRC-mx"].metrics)
            if got.get("rx_bytes") == "300":
                break
    events.cancel()
    assert got["tx_packets"] == "4"
    url = f"http://127.0.0.1:{node.forwarder.health_port()}/metrics"
    text = _fetch_in(vpp_bed.underlay.a, url)
    labels = r'\{cross_connect="mx",side="source"\}'
    assert re.search(rf"^nsm_forwarder_interface_rx_bytes_total{labels} 300\.0$", text, re.M)


def _fetch_in(netns: str, url: str) -> str:
    """GET ``url`` from inside namespace ``netns`` (the forwarder's probes listen there)."""
    code = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code], capture_output=True, text=True
    )
    return done.stdout


def test_vpp_absent_refuses_to_start_with_one_line(vpp_bed: VppBed) -> None:
    vpp_bed.vpp.stop()
    env = dict(
        os.environ,
        NSM_FORWARDER_DRIVER="vpp",
        NSM_FORWARDER_SRC_IP=vpp_bed.underlay.a_ip,
        NSM_FORWARDER_VPP_API_SOCKET="/tmp/nsm-no-vpp-here/api.sock",
        NSM_FORWARDER_VPP_CONNECT_TIMEOUT="300ms",
        NSM_FORWARDER_HEALTH_PORT="0",
        NSM_FORWARDER_STATE_DIR=vpp_bed.vpp.runtime + "/state",
        FORWARDER_SOCKET=vpp_bed.vpp.runtime + "/f.sock",
        INSECURE="true",
    )
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            vpp_bed.underlay.a,
            sys.executable,
            "-m",
            "nsm_forwarder.tools.cli",
            "run",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert re.search(
        r"cannot connect to VPP at /tmp/nsm-no-vpp-here/api.sock: no such socket", errors[0]
    )

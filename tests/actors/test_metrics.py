"""Metrics: NSM metrics events (METRICS_COLLECTOR_ENABLED) and Prometheus /metrics rise with
traffic."""

from __future__ import annotations

import re
import urllib.request

from google.protobuf import empty_pb2

from nsm_forwarder.proto import crossconnect_pb2
from tests.conftest import Node, needs_root
from tests.helpers import Pods, local_xcon, wait_until

pytestmark = needs_root


def scrape(node: Node) -> str:
    port = node.forwarder.health_port()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


TX = "nsm_forwarder_interface_tx_packets_total"
SRC_END = '{cross_connect="met-1",side="source"}'


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_metrics_events_and_prometheus_rise_with_traffic(node_factory: type, pods: Pods) -> None:
    node: Node = node_factory(
        METRICS_COLLECTOR_ENABLED="true", METRICS_COLLECTOR_REQUEST_PERIOD="200ms"
    ).start()
    a, b = pods.make(), pods.make()
    xcon = local_xcon("met-1", a, b)
    node.forwarder.stub().Request(xcon, timeout=15)
    events = node.forwarder.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=30)
    assert next(events).type == crossconnect_pb2.INITIAL_STATE_TRANSFER
    assert a.ping("10.30.1.2", count=5)
    for event in events:
        if event.type != crossconnect_pb2.UPDATE or "SRC-met-1" not in event.metrics:
            continue
        src = dict(event.metrics["SRC-met-1"].metrics)
        if int(src["tx_packets"]) >= 5:
            break
    events.cancel()
    assert not event.cross_connects  # metrics-only UPDATE: nsmd does not re-run UpdateXcon
    dst = dict(event.metrics["DST-met-1"].metrics)
    assert int(dst["rx_packets"]) >= 5 and int(src["rx_bytes"]) > 0
    assert src["rx_error_packets"] == "0" and src["tx_error_packets"] == "0"

    wait_until(
        lambda: sample(scrape(node), TX, SRC_END) >= 5,
        10,
        "/metrics counters",
    )
    text = scrape(node)
    before = sample(text, TX, SRC_END)
    assert sample(text, "nsm_forwarder_cross_connects") == 1
    assert sample(text, "nsm_forwarder_registered") == 1
    assert sample(text, "nsm_forwarder_registration_state", '{state="registered"}') == 1
    assert sample(text, "nsm_forwarder_registration_state", '{state="retrying"}') == 0
    for component in ("worker", "connection", "monitor", "registrar"):
        assert sample(text, "nsm_forwarder_restarts_total", f'{{component="{component}"}}') == 0
    assert sample(text, "nsm_forwarder_workers") == 2
    assert sample(text, "nsm_forwarder_worker_resident_memory_bytes", '{worker="0"}') > 1e6
    assert sample(text, "process_resident_memory_bytes") > 1e6
    assert "python_info{" in text
    labels = '{grpc_code="OK",mechanism="KERNEL_INTERFACE"}'
    assert sample(text, "nsm_forwarder_request_duration_seconds_count", labels) == 1
    assert a.ping("10.30.1.2", count=3)
    wait_until(
        lambda: sample(scrape(node), TX, SRC_END) >= before + 3,
        10,
        "counters to rise",
    )
    node.forwarder.stub().Close(xcon, timeout=15)
    assert sample(scrape(node), "nsm_forwarder_close_duration_seconds_count", labels) == 1

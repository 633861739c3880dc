"""A real forwarder observed as an operator would: OpenTelemetry spans of the main process and
its workers at an OTLP collector (TRACER_ENABLED), JSON log lines carrying the cross-connect
id (NSM_FORWARDER_LOG_FORMAT=json), the standard gRPC health service and gRPC reflection."""

from __future__ import annotations

import concurrent.futures
import json
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.conftest import Node, needs_root
from tests.helpers import Pods, local_xcon, wait_until

pytestmark = needs_root


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: keeps (resource attributes, span) of every span exported."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for resource_spans in request.resource_spans:
                attrs = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    self.spans.extend((attrs, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def named(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        with self.lock:
            return [(r, s) for r, s in self.spans if s.name == name]


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value") or "string_value")


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    receiver = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(None)


def test_observability_traces_json_logs_health_and_reflection(
    node_factory: type, pods: Pods, collector: tuple[Collector, int]
) -> None:
    receiver, port = collector
    node: Node = node_factory(
        TRACER_ENABLED="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_BSP_SCHEDULE_DELAY="100",
        NSM_FORWARDER_LOG_FORMAT="json",
        NSM_FORWARDER_GRPC_REFLECTION="true",
    ).start()
    a, b = pods.make(), pods.make()
    xcon = local_xcon("obs-1", a, b)
    node.forwarder.stub().Request(xcon, timeout=15)
    assert a.ping("10.30.1.2")
    node.forwarder.stub().Close(xcon, timeout=15)
    gone = local_xcon("obs-2", a, b)
    gone.destination.mechanism.parameters["netnsInode"] = "1"  # no such namespace
    with pytest.raises(grpc.RpcError) as failed:
        node.forwarder.stub().Request(gone, timeout=15)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND

    # traces: the main process's spans and the worker's, in one trace per Request
    wait_until(lambda: len(receiver.named("driver apply")) >= 1, 15, "the worker's span")
    wait_until(lambda: len(receiver.named("forwarder.Forwarder/Close")) >= 1, 15, "the Close")
    (main, rpc), *_ = receiver.named("forwarder.Forwarder/Request")
    trace = [(r, s) for r, s in receiver.spans if s.trace_id == rpc.trace_id]
    names = {s.name for _, s in trace}
    assert {"ConnectionActor apply", "worker apply", "driver apply"} <= names, names
    worker_resource, driver = next((r, s) for r, s in trace if s.name == "driver apply")
    assert worker_resource["service.name"] == main["service.name"] == "nsm-forwarder"
    assert worker_resource["nsm.worker.index"] in (0, 1)
    assert main["service.instance.id"] == node.forwarder.name
    worker_call = next(s for _, s in trace if s.name == "worker apply")
    assert driver.parent_span_id == worker_call.span_id
    attrs = {a.key: _value(a.value) for a in rpc.attributes}
    assert attrs["nsm.cross_connect.id"] == "obs-1" and attrs["rpc.grpc.status_code"] == 0

    # logs: JSON lines, the cross-connect id a field, in the main process and the workers
    records = [json.loads(line) for line in node.forwarder.log().splitlines() if line]
    about = [r for r in records if r.get("xcon_id") == "obs-1"]
    assert any(r["process"] == "main" and "request id=obs-1" in r["message"] for r in about)
    assert any(r["process"] == "main" and "close id=obs-1" in r["message"] for r in about)
    failed_in_worker = [
        r for r in records if r.get("xcon_id") == "obs-2" and r["process"].startswith("worker-")
    ]
    assert failed_in_worker, "the worker's log of the failed apply carries the id"
    assert {"time", "level", "logger", "message"} <= set(records[0])

    # the standard gRPC health service, and reflection (enabled here; off by default)
    health = health_pb2_grpc.HealthStub(node.forwarder.channel())
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(node.forwarder.channel())
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    services = {s.name for s in next(answers).list_services_response.service}
    assert {
        "forwarder.Forwarder",
        "forwarder.MechanismsMonitor",
        "crossconnect.MonitorCrossConnect",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services

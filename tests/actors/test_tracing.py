"""Tracing (TRACER_ENABLED): the spans of a Request and a Close through the Frontend, an actor
and a worker call, with the SDK's InMemorySpanExporter; and no OpenTelemetry at all when off."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from nsm_forwarder.actors import tracing
from nsm_forwarder.actors import worker as worker_mod
from nsm_forwarder.actors.frontend import ForwarderService
from nsm_forwarder.actors.logs import XCON_ID
from nsm_forwarder.actors.messages import (
    ApplyXconn,
    CloseXconn,
    Message,
    WorkerCall,
    WorkerReply,
    XconnApplied,
    XconnClosed,
)
from nsm_forwarder.actors.metrics import Metrics
from nsm_forwarder.actors.runtime import BaseActor, ask
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.drivers.errors import ForwarderError, InvalidRequest
from nsm_forwarder.proto import crossconnect_pb2, forwarder_pb2_grpc

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class FakeDriver:
    """What a worker's driver does, in this process: apply fails for payload "bad"."""

    def apply(self, plan: dict[str, Any]) -> dict[str, Any]:
        if plan["payload"] == "bad":
            raise InvalidRequest("payload: bad (test)")
        return {"id": plan["id"]}

    def remove(self, applied: dict[str, Any]) -> None:
        pass


def in_process_worker(
    method: str, args: list[Any], timeout: float | None, meta: dict[str, Any] | None
) -> Any:
    """WorkerPool._call, but the worker's side runs here (its spans in the same exporter)."""
    call = WorkerCall(1, method, args, meta)
    reply = worker_mod._reply_to(FakeDriver(), worker_mod.Faults(0, ""), call, 0)  # type: ignore[arg-type]
    assert isinstance(reply, WorkerReply)  # FakeDriver answers every call at once
    if not reply.ok:
        raise ForwarderError.from_wire(reply.error or {})
    return reply.result


class FakeConnectionActor(BaseActor):
    """One cross-connect id, as a ConnectionActor: a worker call per Request / Close."""

    def __init__(self, xcon_id: str, pool: WorkerPool) -> None:
        super().__init__()
        self.xcon_id, self.pool = xcon_id, pool

    def on_start(self) -> None:
        XCON_ID.set(self.xcon_id)

    def handle(self, message: Message) -> Any:
        assert isinstance(message, ApplyXconn | CloseXconn)
        xcon = crossconnect_pb2.CrossConnect.FromString(message.xcon)
        if isinstance(message, ApplyXconn):
            self.pool.call("apply", {"id": xcon.id, "payload": xcon.payload})
            return XconnApplied(xcon=message.xcon)
        self.pool.call("remove", {"id": xcon.id})
        return XconnClosed(id=xcon.id, known=True)


class FakeConnections:
    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.actors: dict[str, Any] = {}

    async def ask(self, xcon_id: str, message: Message) -> Any:
        if xcon_id not in self.actors:
            self.actors[xcon_id] = FakeConnectionActor.start(xcon_id, self.pool)
        return await ask(self.actors[xcon_id], message)

    def stop(self) -> None:
        for ref in self.actors.values():
            ref.stop()


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.configure(exporter=memory, attributes={"service.instance.id": "test"})
    try:
        yield memory
    finally:
        tracing.shutdown()


def test_tracing_spans_of_request_and_close_through_actor_and_worker(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = WorkerPool(1, "kernel")  # never started: its calls run in_process_worker
    monkeypatch.setattr(pool, "_call", in_process_worker)
    connections = FakeConnections(pool)
    metrics = Metrics(False)

    async def scenario() -> None:
        server = grpc.aio.server()
        service = ForwarderService(connections, metrics)  # type: ignore[arg-type]
        forwarder_pb2_grpc.add_ForwarderServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = forwarder_pb2_grpc.ForwarderStub(channel)
                xcon = crossconnect_pb2.CrossConnect(id="tr-1", payload="IP")
                await stub.Request(xcon, metadata=[("traceparent", PARENT)], timeout=10)
                await stub.Close(xcon, timeout=10)
                bad = crossconnect_pb2.CrossConnect(id="tr-2", payload="bad")
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.Request(bad, timeout=10)
                assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await server.stop(None)
            connections.stop()

    asyncio.run(scenario())
    spans = exporter.get_finished_spans()
    by_trace: dict[int, dict[str, Any]] = {}
    for span in spans:
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, {})[span.name] = span
    assert len(by_trace) == 3  # Request, Close, the failed Request: one trace each

    request = by_trace[int(TRACE_ID, 16)]  # the caller's trace, from the gRPC metadata
    assert set(request) == {
        "forwarder.Forwarder/Request",
        "FakeConnectionActor apply",
        "worker apply",
        "driver apply",
    }
    rpc = request["forwarder.Forwarder/Request"]
    assert rpc.kind is SpanKind.SERVER and rpc.parent.span_id == 0x00F067AA0BA902B7
    assert rpc.attributes["rpc.system"] == "grpc"
    assert rpc.attributes["rpc.service"] == "forwarder.Forwarder"
    assert rpc.attributes["rpc.method"] == "Request"
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    assert rpc.attributes["nsm.cross_connect.id"] == "tr-1"
    assert rpc.resource.attributes["service.name"] == "nsm-forwarder"
    chain = ["forwarder.Forwarder/Request", "FakeConnectionActor apply", "worker apply"]
    for parent, child in zip(chain, [*chain[1:], "driver apply"], strict=True):
        assert request[child].parent.span_id == request[parent].context.span_id, child
    assert request["worker apply"].kind is SpanKind.CLIENT
    driver = request["driver apply"]
    assert driver.kind is SpanKind.SERVER
    assert driver.attributes["nsm.cross_connect.id"] == "tr-1"  # sent with the worker call

    close = next(t for t in by_trace.values() if "forwarder.Forwarder/Close" in t)
    assert set(close) == {
        "forwarder.Forwarder/Close",
        "FakeConnectionActor close",
        "worker remove",
        "driver remove",
    }
    failed = next(t for tid, t in by_trace.items() if t is not request and t is not close)
    rpc = failed["forwarder.Forwarder/Request"]
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert rpc.status.status_code is StatusCode.ERROR
    assert failed["FakeConnectionActor apply"].status.status_code is StatusCode.ERROR
    assert failed["driver apply"].status.status_code is StatusCode.ERROR

    text = metrics_text(metrics)
    assert 'nsm_forwarder_request_duration_seconds_count{grpc_code="INVALID_ARGUMENT"' in text


def metrics_text(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_tracing_worker_calls_outside_a_span_make_none(exporter: InMemorySpanExporter) -> None:
    """The periodic checks' worker calls (no Request around them) are not traced."""
    with tracing.worker_call("stats", None) as meta:
        assert meta is None
    assert exporter.get_finished_spans() == ()


def test_tracing_off_imports_no_opentelemetry() -> None:
    """Off (the default), the forwarder's modules and every hook run without importing
    OpenTelemetry at all."""
    code = (
        "import sys, asyncio\n"
        "import nsm_forwarder.actors.supervisor, nsm_forwarder.tools.cli\n"
        "import nsm_forwarder.actors.worker as w\n"
        "from nsm_forwarder.actors import tracing, runtime\n"
        "from nsm_forwarder.actors.messages import WorkerCall\n"
        "assert not tracing.enabled\n"
        "class D:\n"
        "    def init(self, c): return {}\n"
        "r = w._reply_to(D(), w.Faults(0, ''), WorkerCall(1, 'ping', [], {'xcon_id': 'x'}))\n"
        "assert r.ok\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

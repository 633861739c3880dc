"""Tracing: OpenTelemetry spans for every Request and Close, across actors and worker processes.

Off unless :func:`configure` ran (``TRACER_ENABLED=true``): then :data:`enabled` is True and
the hooks below make spans; off, every hook is a check of that one module attribute and
OpenTelemetry is never imported (no import cost, nothing measurable on the Request path).

The spans of one Request (one trace; the parent from the gRPC metadata when the caller sent
one, with the propagators of ``OTEL_PROPAGATORS``, W3C trace context by default):

- ``forwarder.Forwarder/Request`` (server, the Frontend): ``rpc.*`` attributes,
  ``rpc.grpc.status_code``, ``nsm.cross_connect.id``, ``nsm.mechanism``;
- ``ConnectionActor apply`` (the actor's handling, on its thread): the context travels in the
  :class:`~nsm_forwarder.actors.runtime.Envelope` (:func:`capture` / :func:`actor_span`);
- ``worker apply`` (client, the pool's call) and, in the worker process, ``driver apply``
  (server): the context travels in the msgpack WorkerCall's ``meta`` (:func:`worker_call`,
  :func:`worker_span`).

Spans go by OTLP/gRPC to the configured endpoint from each process (the main process and each
worker export their own), batched; :func:`shutdown` flushes them. The SDK's own ``OTEL_*``
variables (headers, certificates, resource attributes, sampler) apply as usual.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "actor_span",
    "capture",
    "configure",
    "enabled",
    "error_status",
    "record_error",
    "rpc_span",
    "set_grpc_code",
    "shutdown",
    "worker_call",
    "worker_span",
]

#: True once :func:`configure` has run (and until :func:`shutdown`).
enabled = False
_tracer: Any = None
_provider: Any = None

SERVICE_NAME = "nsm-forwarder"


def configure(
    endpoint: str = "", *, exporter: Any = None, attributes: Mapping[str, Any] | None = None
) -> None:
    """Turn tracing on in this process: spans to OTLP/gRPC ``endpoint`` (batched), or to
    ``exporter`` synchronously (tests: the SDK's InMemorySpanExporter). ``attributes`` join the
    resource (``service.name`` is ``nsm-forwarder`` unless OTEL_SERVICE_NAME says otherwise)."""
    global enabled, _tracer, _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource_attributes = dict(attributes or {})
    if not os.environ.get("OTEL_SERVICE_NAME"):
        resource_attributes.setdefault("service.name", SERVICE_NAME)
    provider = TracerProvider(resource=Resource.create(resource_attributes))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider, _tracer = provider, provider.get_tracer("nsm_forwarder")
    enabled = True


def shutdown() -> None:
    """Flush and stop the exporter; tracing is off afterwards."""
    global enabled, _tracer, _provider
    provider, _provider, _tracer, enabled = _provider, None, None, False
    if provider is not None:
        provider.shutdown()


# --- the Frontend ------------------------------------------------------------------------------


@contextlib.contextmanager
def rpc_span(
    service: str, method: str, metadata: Any, attributes: Mapping[str, Any]
) -> Iterator[Any]:
    """The server span of one gRPC call (current while it runs); its parent from the call's
    ``metadata`` (``(key, value)`` pairs) when it carries one."""
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
    with _tracer.start_as_current_span(
        f"{service}/{method}",
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
            **attributes,
        },
    ) as span:
        yield span


def set_grpc_code(span: Any, code: str) -> None:
    """Record the gRPC status code (by name, e.g. ``INVALID_ARGUMENT``) of the call's answer."""
    import grpc
    from opentelemetry.trace import Status, StatusCode

    status = getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)
    span.set_attribute("rpc.grpc.status_code", status.value[0])
    if status is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code))


# --- actor hops ----------------------------------------------------------------------------------


def capture() -> Any:
    """The current context if a span is recording in it (to hand to an actor), else None."""
    from opentelemetry import context, trace

    if not trace.get_current_span().get_span_context().is_valid:
        return None
    return context.get_current()


@contextlib.contextmanager
def actor_span(parent: Any, name: str) -> Iterator[Any]:
    """An actor's handling of one message, as a child of the captured ``parent`` context."""
    with _tracer.start_as_current_span(name, context=parent) as span:
        yield span


def error_status(description: str) -> Any:
    """An ERROR span status with ``description``."""
    from opentelemetry.trace import Status, StatusCode

    return Status(StatusCode.ERROR, description)


def record_error(span: Any, exc: BaseException) -> None:
    """The handling failed with ``exc`` (which goes back to the asker, not through the span)."""
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


# --- worker calls --------------------------------------------------------------------------------


@contextlib.contextmanager
def worker_call(method: str, worker_meta: dict[str, Any] | None) -> Iterator[dict[str, Any] | None]:
    """The client span of one worker call made within a traced operation; yields the call's
    ``meta`` with the context added (W3C ``traceparent``), to send with it. Calls made outside
    any span (the periodic checks) get no span: ``worker_meta`` is yielded as it is."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    if not trace.get_current_span().get_span_context().is_valid:
        yield worker_meta
        return
    meta = dict(worker_meta or {})
    with _tracer.start_as_current_span(
        f"worker {method}", kind=SpanKind.CLIENT, attributes={"nsm.worker.method": method}
    ):
        propagate.inject(meta)
        yield meta


@contextlib.contextmanager
def worker_span(meta: Mapping[str, Any], method: str, index: int) -> Iterator[Any]:
    """In a worker: the server span of one call whose ``meta`` carries the caller's context."""
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    carrier = {k: v for k, v in meta.items() if isinstance(v, str)}
    attributes: dict[str, Any] = {"nsm.worker.method": method, "nsm.worker.index": index}
    if meta.get("xcon_id"):
        attributes["nsm.cross_connect.id"] = meta["xcon_id"]
    with _tracer.start_as_current_span(
        f"driver {method}",
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        yield span

"""HTTP probes: 503 naming the missing start-up steps until every goal is met."""

from __future__ import annotations

import asyncio

import pytest

from nsm_forwarder.actors.health import GOALS, Health


async def _get(port: int, path: str) -> tuple[int, str]:
    return await _get_host("127.0.0.1", port, path)


def test_health_readiness_names_missing_steps() -> None:
    async def scenario() -> None:
        health = Health("127.0.0.1", 0)
        port = await health.start()
        try:
            assert await _get(port, "/liveness") == (200, "OK\n")
            status, body = await _get(port, "/readiness")
            assert status == 503 and "waiting for workers, reconciled, socket_listening" in body
            for goal in GOALS[:-1]:
                health.set_goal(goal)
            status, body = await _get(port, "/readiness")
            assert status == 503 and "waiting for registration" in body
            health.set_goal(GOALS[-1])
            assert await _get(port, "/readiness") == (200, "OK\n")
            assert (await _get(port, "/metrics"))[0] == 404
        finally:
            await health.stop()

    asyncio.run(scenario())


def _http(port: int, path: str) -> tuple[int, str, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def test_health_metrics_by_prometheus_client_with_conventional_names() -> None:
    """/metrics is prometheus_client's exposition: process_* and python_* collectors, every
    forwarder metric named by the Prometheus rules, one dimension per label."""
    from prometheus_client.parser import text_string_to_metric_families

    from nsm_forwarder.actors.metrics import METRICS, Metrics
    from nsm_forwarder.actors.restarts import Restarts

    restarts = Restarts(100, 10.0, lambda why: None)
    restarts.record("worker-1")
    restarts.record("worker-0")
    restarts.record("monitor")
    metrics = Metrics(False, restarts)
    metrics.counters = {"SRC-x1": {"rx_bytes": 10}, "DST-x1": {"rx_bytes": 20}}
    metrics.observe_rpc("request", "KERNEL_INTERFACE", "NOT_FOUND", 0.002)

    async def scenario() -> tuple[int, str, str]:
        health = Health("127.0.0.1", 0, metrics.registry, metrics.note_scrape)
        port = await health.start()
        try:
            return await asyncio.to_thread(_http, port, "/metrics")
        finally:
            await health.stop()

    status, content_type, text = asyncio.run(scenario())
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert metrics.last_scrape is not None  # a scrape keeps the counters collected
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "process_resident_memory_bytes" in families and "python_info" in families
    assert "python_gc_collections" in families
    for name, kind, labels, _ in METRICS:
        family = families[name.removesuffix("_total")]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= set(labels), (name, sample.labels)
        if kind == "counter":
            assert name.endswith("_total")
    for family in families.values():
        for sample in family.samples:
            assert not any(v.startswith(("SRC-", "DST-")) for v in sample.labels.values())
    restart_samples = families["nsm_forwarder_restarts"].samples
    restarts_by = {s.labels["component"]: s.value for s in restart_samples}
    assert restarts_by == {"worker": 2, "connection": 0, "monitor": 1, "registrar": 0}
    rx = {
        (s.labels["cross_connect"], s.labels["side"]): s.value
        for s in families["nsm_forwarder_interface_rx_bytes"].samples
    }
    assert rx == {("x1", "source"): 10, ("x1", "destination"): 20}
    latency = families["nsm_forwarder_request_duration_seconds"].samples
    assert any(s.labels.get("grpc_code") == "NOT_FOUND" for s in latency)


def test_health_probes_without_metrics_and_on_ipv6() -> None:
    import socket

    async def scenario(host: str) -> None:
        health = Health(host, 0)
        port = await health.start()
        try:
            assert await _get_host(host, port, "/liveness") == (200, "OK\n")
            assert (await _get_host(host, port, "/metrics"))[0] == 404
        finally:
            await health.stop()

    asyncio.run(scenario("127.0.0.1"))
    if socket.has_ipv6:
        try:
            asyncio.run(scenario("::1"))
        except OSError as exc:  # no IPv6 loopback here
            pytest.skip(f"no ::1: {exc}")


async def _get_host(host: str, port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body

"""Metrics: Prometheus ``/metrics`` for operators and, with METRICS_COLLECTOR_ENABLED, NSM
metrics events for nsmd.

Accepts:  ``observe_rpc(kind, mechanism, result, seconds)`` from the Frontend; ``poll()`` from
          the Supervisor's metrics loop (every METRICS_COLLECTOR_REQUEST_PERIOD).
Sends:    a ``stats`` WorkerCall (interface counters of every local cross-connect end) per poll;
          MetricsCollected to the Monitor when metrics events are enabled.
Guarantees: ``/metrics`` always works: cross-connects gauge, per-end interface counters from the
          last poll, Request/Close latency histograms by mechanism and result, restarts by kind,
          registration state. Counter keys are ``SRC-<id>`` / ``DST-<id>`` (spec §4.9).
Threads:  the asyncio loop; the worker call runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nsm_forwarder.actors.messages import ListXconns, MetricsCollected
from nsm_forwarder.actors.restarts import Restarts
from nsm_forwarder.actors.runtime import Link
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.actors.xcons import local_end_names
from nsm_forwarder.proto import crossconnect_pb2

log = logging.getLogger(__name__)

PREFIX = "nsm_forwarder"
#: how long after a /metrics scrape the interface counters are still collected
SCRAPE_WINDOW = 120.0
SIDE_KEY = {"source": "SRC", "destination": "DST"}


def mechanism_of(xcon: crossconnect_pb2.CrossConnect) -> str:
    """The label of a cross-connect: its remote mechanism type if any, else the local one."""
    types = [xcon.source.mechanism.type, xcon.destination.mechanism.type]
    remote = [t for t in types if t and t != "KERNEL_INTERFACE"]
    return (remote or types or ["unknown"])[0] or "unknown"


def stats_entries(xcons: list[bytes]) -> list[dict[str, Any]]:
    """``{"key", "id", "side", "inode", "name"}`` of every local end of these cross-connects
    (``side``: the tag side, src or dst)."""
    entries = []
    for data in xcons:
        xcon_id, ends = local_end_names(data)
        for side, inode, name in ends:
            tag_side = SIDE_KEY[side].lower()
            key = f"{SIDE_KEY[side]}-{xcon_id}"
            entries.append(
                {"key": key, "id": xcon_id, "side": tag_side, "inode": inode, "name": name}
            )
    return entries


class _LiveCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        yield GaugeMetricFamily(
            f"{PREFIX}_cross_connects", "Cross-connects applied now.", value=m.xcon_count
        )
        by_kind = dict(m.restarts.by_kind) if m.restarts else {}
        workers = CounterMetricFamily(
            f"{PREFIX}_worker_restarts", "Worker processes replaced after dying or hanging."
        )
        workers.add_metric([], sum(n for k, n in by_kind.items() if k.startswith("worker")))
        yield workers
        restarts = CounterMetricFamily(
            f"{PREFIX}_restarts",
            "Restarts by the supervisors, by actor or worker (worker-N, connection, monitor, "
            "registrar).",
            labels=["kind"],
        )
        for kind, count in sorted(by_kind.items()):
            restarts.add_metric([kind], count)
        yield restarts
        registered = GaugeMetricFamily(
            f"{PREFIX}_registered", "1 while registered with nsmd, else 0.", labels=["state"]
        )
        state = m.registration_state()
        registered.add_metric([state], 1.0 if state == "registered" else 0.0)
        yield registered
        for counter in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"):
            yield self._interface(counter, counter.replace("_", " "))
        yield self._interface("rx_error_packets", "received packets with errors")
        yield self._interface("tx_error_packets", "transmit errors")

    def _interface(self, counter: str, text: str) -> CounterMetricFamily:
        family = CounterMetricFamily(
            f"{PREFIX}_interface_{counter}",
            f"Pod interface {text}, per cross-connect end (key SRC-<id> / DST-<id>).",
            labels=["key"],
        )
        for key, values in sorted(self.metrics.counters.items()):
            family.add_metric([key], values.get(counter, 0))
        return family


class Metrics:
    def __init__(self, events_enabled: bool, restarts: Restarts | None = None) -> None:
        self.events_enabled = events_enabled
        self.restarts = restarts
        self.registry = CollectorRegistry()
        self.pool: WorkerPool | None = None
        self.monitor: Link | None = None
        self.registration_state: Callable[[], str] = lambda: "not_started"
        self.xcon_count = 0
        self.counters: dict[str, dict[str, int]] = {}
        #: when /metrics was last scraped (monotonic seconds; None: never)
        self.last_scrape: float | None = None
        self.latency = {
            kind: Histogram(
                f"{PREFIX}_{kind}_seconds",
                f"Forwarder.{kind.capitalize()} latency.",
                ["mechanism", "result"],
                registry=self.registry,
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            )
            for kind in ("request", "close")
        }
        self.registry.register(_LiveCollector(self))

    def observe_rpc(self, kind: str, mechanism: str, result: str, seconds: float) -> None:
        self.latency[kind].labels(mechanism=mechanism, result=result).observe(seconds)

    def render(self) -> bytes:
        self.last_scrape = time.monotonic()
        return generate_latest(self.registry)

    def wanted(self) -> bool:
        """Counters are read only for someone: NSM metrics events are on, or /metrics was
        scraped within the last :data:`SCRAPE_WINDOW` seconds (reading every interface of a
        node with thousands of cross-connects costs a worker real time)."""
        if self.events_enabled:
            return True
        return self.last_scrape is not None and time.monotonic() - self.last_scrape < SCRAPE_WINDOW

    async def poll(self) -> None:
        """Read every local end's counters; publish a metrics event if enabled."""
        assert self.pool is not None and self.monitor is not None
        async with asyncio.timeout(5):
            xcons: list[bytes] = await self.monitor.ask(ListXconns())
        self.xcon_count = len(xcons)
        if not self.wanted():
            return
        entries = stats_entries(xcons)
        counters: dict[str, dict[str, int]] = (
            await asyncio.to_thread(self.pool.call, "stats", entries) if entries else {}
        )
        self.counters = counters
        if self.events_enabled and counters:
            as_text = {k: {n: str(v) for n, v in c.items()} for k, c in counters.items()}
            self.monitor.tell(MetricsCollected(metrics=as_text))

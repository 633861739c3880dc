"""Metrics: Prometheus ``/metrics`` for operators and, with METRICS_COLLECTOR_ENABLED, NSM
metrics events for nsmd.

Accepts:  ``observe_rpc(kind, mechanism, grpc_code, seconds)`` from the Frontend; ``poll()``
          from the Supervisor's metrics loop (every METRICS_COLLECTOR_REQUEST_PERIOD);
          ``note_scrape()`` from the probe server before each scrape.
Sends:    a ``stats`` WorkerCall (interface counters of every local cross-connect end) per poll;
          MetricsCollected to the Monitor when metrics events are enabled.
Guarantees: ``/metrics`` always works, named by the Prometheus rules (base units, ``_total``
          counters, one dimension per label): build info, cross-connects, Request/Close
          latency histograms by mechanism and gRPC code, restarts by component, registration,
          worker processes, per-end interface counters from the last poll (labels
          ``cross_connect`` and ``side``), and prometheus_client's ``process_*`` and
          ``python_*`` collectors. NSM's metrics events keep their wire keys ``SRC-<id>`` /
          ``DST-<id>`` (spec §4.9). Every metric is listed in :data:`METRICS` (the README's
          table is checked against it).
Threads:  the asyncio loop (poll); the collector runs on the probe server's thread and only
          reads values the loop replaces whole.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nsm_forwarder.actors.messages import ListXconns, MetricsCollected
from nsm_forwarder.actors.registrar import RegistrationState
from nsm_forwarder.actors.restarts import COMPONENTS, Restarts
from nsm_forwarder.actors.runtime import Link
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.actors.xcons import LIVE_ENDS
from nsm_forwarder.proto import crossconnect_pb2

log = logging.getLogger(__name__)

PREFIX = "nsm_forwarder"
#: how long after a /metrics scrape the interface counters are still collected
SCRAPE_WINDOW = 120.0
SIDE_KEY = {"source": "SRC", "destination": "DST"}
#: the interface counters a driver's ``stats`` reports for each end, with their help
INTERFACE_COUNTERS = {
    "rx_bytes": "Bytes received",
    "tx_bytes": "Bytes sent",
    "rx_packets": "Packets received",
    "tx_packets": "Packets sent",
    "rx_error_packets": "Packets received with errors",
    "tx_error_packets": "Transmit errors",
}
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: Every metric of ``/metrics`` but prometheus_client's process_* / python_* (name as exposed,
#: type, labels, help); the README's Metrics section documents each.
METRICS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (f"{PREFIX}_build_info", "gauge", ("version", "driver"), "Always 1; the version and driver."),
    (f"{PREFIX}_cross_connects", "gauge", (), "Cross-connects applied now."),
    *(
        (
            f"{PREFIX}_{kind}_duration_seconds",
            "histogram",
            ("mechanism", "grpc_code"),
            f"Time to answer Forwarder.{kind.capitalize()}, by mechanism and gRPC status code.",
        )
        for kind in ("request", "close")
    ),
    (
        f"{PREFIX}_restarts_total",
        "counter",
        ("component",),
        "Restarts by one-for-one supervision, by component (" + ", ".join(COMPONENTS) + ").",
    ),
    (f"{PREFIX}_registered", "gauge", (), "1 while registered with nsmd, else 0."),
    (
        f"{PREFIX}_registration_state",
        "gauge",
        ("state",),
        "1 for the registrar's current state, 0 for the others.",
    ),
    (f"{PREFIX}_workers", "gauge", (), "Worker processes running."),
    (
        f"{PREFIX}_worker_cpu_seconds_total",
        "counter",
        ("worker",),
        "CPU time (user + system) of each worker process.",
    ),
    (
        f"{PREFIX}_worker_resident_memory_bytes",
        "gauge",
        ("worker",),
        "Resident memory of each worker process.",
    ),
    *(
        (
            f"{PREFIX}_interface_{counter}_total",
            "counter",
            ("cross_connect", "side"),
            f"{text} by the pod interface of a cross-connect end (side source or destination), "
            "as of the last collection.",
        )
        for counter, text in INTERFACE_COUNTERS.items()
    ),
)
_HELP = {name: text for name, _, _, text in METRICS}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _version() -> str:
    try:
        return importlib.metadata.version("nsm-forwarder")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def mechanism_of(xcon: crossconnect_pb2.CrossConnect) -> str:
    """The label of a cross-connect: its remote mechanism type if any, else the local one."""
    types = [xcon.source.mechanism.type, xcon.destination.mechanism.type]
    remote = [t for t in types if t and t != "KERNEL_INTERFACE"]
    return (remote or types or ["unknown"])[0] or "unknown"


def stats_entries(xcons: list[bytes]) -> list[dict[str, Any]]:
    """``{"key", "id", "side", "inode", "name"}`` of every local end of these cross-connects
    (``key``: the NSM metrics key ``SRC-<id>`` / ``DST-<id>``; ``side``: the tag side, src or
    dst)."""
    entries = []
    for xcon_id, ends in LIVE_ENDS.of(xcons):
        for side, inode, name in ends:
            tag_side = SIDE_KEY[side].lower()
            key = f"{SIDE_KEY[side]}-{xcon_id}"
            entries.append(
                {"key": key, "id": xcon_id, "side": tag_side, "inode": inode, "name": name}
            )
    return entries


def _end_of(key: str) -> tuple[str, str]:
    """(cross-connect id, side) of an NSM metrics key ``SRC-<id>`` / ``DST-<id>``."""
    prefix, _, xcon_id = key.partition("-")
    return xcon_id, "source" if prefix == "SRC" else "destination"


def _proc_stat(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of a process from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after the command: state is field 3, utime 14, stime 15, rss 24 (1-based, man proc)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, int(fields[21]) * _PAGE_SIZE


def _family(cls: type[Any], name: str, labels: tuple[str, ...] = (), **kw: Any) -> Any:
    """A metric family of METRICS (``name`` without the ``_total`` a counter family adds)."""
    exposed = name + "_total" if cls is CounterMetricFamily else name
    return cls(name, _HELP[exposed], labels=list(labels) if labels else None, **kw)


class _LiveCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        build = _family(GaugeMetricFamily, f"{PREFIX}_build_info", ("version", "driver"))
        build.add_metric([_version(), m.driver], 1)
        yield build
        yield _family(GaugeMetricFamily, f"{PREFIX}_cross_connects", value=m.xcon_count)
        restarts = _family(CounterMetricFamily, f"{PREFIX}_restarts", ("component",))
        counts = m.restarts.by_component() if m.restarts else {}
        for component in COMPONENTS:
            restarts.add_metric([component], counts.get(component, 0))
        yield restarts
        state = m.registration_state()
        yield _family(
            GaugeMetricFamily,
            f"{PREFIX}_registered",
            value=1.0 if state == RegistrationState.REGISTERED.value else 0.0,
        )
        states = _family(GaugeMetricFamily, f"{PREFIX}_registration_state", ("state",))
        for each in RegistrationState:
            states.add_metric([each.value], 1.0 if each.value == state else 0.0)
        yield states
        yield from self._workers()
        counters, ends = m.counters, m.ends  # poll() replaces ends first, then counters
        for counter in INTERFACE_COUNTERS:
            family = _family(
                CounterMetricFamily, f"{PREFIX}_interface_{counter}", ("cross_connect", "side")
            )
            for key, values in sorted(counters.items()):
                xcon_id, side = ends.get(key) or _end_of(key)
                family.add_metric([xcon_id, side], values.get(counter, 0))
            yield family

    def _workers(self) -> Iterator[Any]:
        pool = self.metrics.pool
        workers = [w for w in pool.workers() if w.alive] if pool is not None else []
        yield _family(GaugeMetricFamily, f"{PREFIX}_workers", value=len(workers))
        cpu = _family(CounterMetricFamily, f"{PREFIX}_worker_cpu_seconds", ("worker",))
        rss = _family(GaugeMetricFamily, f"{PREFIX}_worker_resident_memory_bytes", ("worker",))
        for worker in workers:
            stat = _proc_stat(worker.pid)
            if stat is not None:
                cpu.add_metric([str(worker.index)], stat[0])
                rss.add_metric([str(worker.index)], stat[1])
        yield cpu
        yield rss


class Metrics:
    def __init__(
        self, events_enabled: bool, restarts: Restarts | None = None, driver: str = "kernel"
    ) -> None:
        self.events_enabled = events_enabled
        self.restarts = restarts
        self.driver = driver
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        if GC_COLLECTOR is not None:  # None where the interpreter has no gc.get_stats
            GCCollector(registry=self.registry)
        self.pool: WorkerPool | None = None
        self.monitor: Link | None = None
        self.registration_state: Callable[[], str] = lambda: "not_started"
        self.xcon_count = 0
        #: NSM metrics key (SRC-<id> / DST-<id>) -> counter name -> value, from the last poll
        self.counters: dict[str, dict[str, int]] = {}
        #: NSM metrics key -> (cross-connect id, side) for the labels of /metrics
        self.ends: dict[str, tuple[str, str]] = {}
        #: when /metrics was last scraped (monotonic seconds; None: never)
        self.last_scrape: float | None = None
        self.latency = {
            kind: Histogram(
                f"{PREFIX}_{kind}_duration_seconds",
                _HELP[f"{PREFIX}_{kind}_duration_seconds"],
                ["mechanism", "grpc_code"],
                registry=self.registry,
                buckets=_BUCKETS,
            )
            for kind in ("request", "close")
        }
        self.registry.register(_LiveCollector(self))

    def observe_rpc(self, kind: str, mechanism: str, grpc_code: str, seconds: float) -> None:
        self.latency[kind].labels(mechanism=mechanism, grpc_code=grpc_code).observe(seconds)

    def note_scrape(self) -> None:
        """Someone reads /metrics: keep the interface counters fresh for SCRAPE_WINDOW."""
        self.last_scrape = time.monotonic()

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
            await self.pool.acall("stats", entries) if entries else {}
        )
        side_name = {"src": "source", "dst": "destination"}
        self.ends = {e["key"]: (e["id"], side_name[e["side"]]) for e in entries}
        self.counters = counters
        if self.events_enabled and counters:
            as_text = {k: {n: str(v) for n, v in c.items()} for k, c in counters.items()}
            self.monitor.tell(MetricsCollected(metrics=as_text))

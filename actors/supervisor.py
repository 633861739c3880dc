"""Supervisor: starts, wires and stops every actor of a running forwarder, in order.

Accepts:  SIGTERM / SIGINT; "restart limit exceeded" from Restarts (any thread); "nsmd stopped
          watching MonitorMechanisms" from the Frontend (-> Registrar.renew).
Sends:    XconnUpdated (restored cross-connects) and, to a restarted Monitor, Reload; starts,
          restarts and stops the actors, the worker pool and the Store; the periodic loops
          (periodic.py) send ListXconns and MarkDown.

Start-up phases (numbered and timed in the log):
  1 health     HTTP probes (readiness says which of the next steps is missing)
  2 store      open the cross-connect Store in the state dir
  3 workers    spawn the worker pool (DriverHost processes); each runs the driver's init
  4 monitor    start the Monitor actor (cross-connect events)
  5 reconcile  make the data plane and the Store agree (see reconcile.py); restore actors
  6 grpc       wait for the TLS identity (unless INSECURE=true; tls.py), clean a stale socket,
               listen on FORWARDER_SOCKET, serve the API + health service (+ reflection if
               enabled; the server: api_server.py)
  7 register   start the Registrar (registration with nsmd runs in the background)
Then the gRPC health service says SERVING (as /readiness says OK), and the loops of
periodic.py run: the pod liveness check every
CROSS_CONNECT_LIVENESS_CHECK_INTERVAL, interface counters every METRICS_COLLECTOR_REQUEST_PERIOD
for /metrics (and nsmd's metrics events when METRICS_COLLECTOR_ENABLED), and the watchdog.
Shutdown (SIGTERM / SIGINT), in reverse: unregister from nsmd, stop serving (monitor streams
end), remove the socket, stop actors, stop workers, close the Store, stop probes; exit code 0.

Supervision (one-for-one): a worker that dies or hangs is replaced by the pool at once (see
workers.py); a ConnectionActor that dies or hangs is replaced from its Store row by Connections
(frontend.py); the Monitor and the Registrar are watched here every second and restarted if
they died or stopped answering (the Monitor from the Store, with the Frontend sending
subscribers what they missed). More than ``max_restarts`` restarts within ``restart_window``
make the forwarder shut down and exit 3, so Kubernetes restarts the pod. Every restart is
logged and counted in /metrics.

The fault plan (``faults`` setting) is loaded once; each actor and worker gets the injector of
its name, so a test can crash "the registrar" or "worker 1 after 3 calls".

Cross-connects are left in place at shutdown: they belong to the pods, and the Store brings
them back at the next start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc.aio

from nsm_forwarder.actors import tracing
from nsm_forwarder.actors.api_server import ApiServer, ListenError
from nsm_forwarder.actors.batcher import RemoveBatcher
from nsm_forwarder.actors.connection import planner
from nsm_forwarder.actors.connections import Connections
from nsm_forwarder.actors.faults import Injector
from nsm_forwarder.actors.frontend import (
    CrossConnectMonitorService,
    ForwarderService,
    MechanismsService,
    mechanism_update,
)
from nsm_forwarder.actors.health import Health
from nsm_forwarder.actors.messages import ListXconns, Reload, XconnUpdated
from nsm_forwarder.actors.metrics import Metrics
from nsm_forwarder.actors.monitor import MonitorActor
from nsm_forwarder.actors.periodic import DataplaneWatch, check_pods, every, monitor_trouble
from nsm_forwarder.actors.reconcile import reconcile
from nsm_forwarder.actors.registrar import Registrar
from nsm_forwarder.actors.restarts import Restarts
from nsm_forwarder.actors.runtime import Link
from nsm_forwarder.actors.store import Store, StoreError
from nsm_forwarder.actors.tls import Transport, TransportConfigError, tls_settings_from
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.config.faults import parse_plan
from nsm_forwarder.config.settings import Settings
from nsm_forwarder.drivers.errors import ForwarderError
from nsm_forwarder.drivers.linux.netns import all_namespaces
from nsm_forwarder.drivers.plan import DEFAULT_EGRESS_MTU, Offer

log = logging.getLogger("nsm_forwarder.supervisor")

#: Actors whose message handling the fault plan can wrap in this process (workers: worker.py).
FAULT_TARGETS = ("frontend", "registrar", "monitor", "connection")
PHASES = ("health", "store", "workers", "monitor", "reconcile", "grpc", "register")


class StartupError(Exception):
    """A start-up phase failed; the message says which and why."""


class Supervisor:
    #: seconds between two checks that the Monitor and the Registrar are alive and answering
    WATCHDOG_INTERVAL = 1.0
    #: how long the Monitor may take to answer the watchdog before it is replaced
    MONITOR_TIMEOUT = 5.0
    #: exit code after the restart intensity limit was exceeded
    EXIT_RESTARTS = 3

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = time.monotonic()
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.loop = asyncio.get_running_loop()
        plan = parse_plan(settings.faults)
        self.faults = {name: Injector(name, plan) for name in FAULT_TARGETS}
        self.restarts = Restarts(
            settings.max_restarts,
            settings.restart_window.total_seconds(),
            self._give_up_threadsafe,
        )
        self.pool: WorkerPool | None = None
        self.monitor = Link("monitor")
        self.connections: Connections | None = None
        self.api = ApiServer(
            settings.socket_type,
            settings.socket,
            settings.socket_group,
            reflection=settings.grpc_reflection,
            max_message_size=settings.max_message_size,
            max_watchers=settings.max_monitor_subscribers,
        )
        self.transport: Transport | None = None
        self.metrics = Metrics(settings.metrics_enabled, self.restarts, settings.driver)
        self.health = Health(
            settings.health_host,
            settings.health_port,
            self.metrics.registry,
            self.metrics.note_scrape,
        )
        self.registrar: Registrar | None = None
        self.dataplane: DataplaneWatch | None = None
        self.store: Store | None = None
        self._loops: list[asyncio.Task[None]] = []

    # --- start-up -----------------------------------------------------------------------------

    async def _phase(self, number: int, name: str, coro: Any) -> None:
        start = time.monotonic()
        log.info(
            "phase %d/%d %s: start (t+%d ms)",
            number,
            len(PHASES),
            name,
            (start - self.started) * 1000,
        )
        await coro
        log.info(
            "phase %d/%d %s: done in %.0f ms",
            number,
            len(PHASES),
            name,
            (time.monotonic() - start) * 1000,
        )

    async def start(self) -> None:
        s = self.settings
        log.info("starting %s (driver %s, %d workers)", s.name, s.driver, s.workers)
        if s.tracer_enabled:
            tracing.configure(s.otlp_endpoint, attributes={"service.instance.id": s.name})
            log.info("tracing: OpenTelemetry spans by OTLP/gRPC to %s", s.otlp_endpoint)
        if s.faults:
            log.warning("FAULT INJECTION IS ON: %s", s.faults)
        steps = (
            self._start_health,
            self._open_store,
            self._start_workers,
            self._start_monitor,
            self._reconcile,
            self._start_grpc,
            self._start_registrar,
        )
        for number, (name, step) in enumerate(zip(PHASES, steps, strict=True), 1):
            await self._phase(number, name, step())
        await self.api.set_serving(self.health.ready)  # gRPC health says what /readiness says
        self._start_loops()
        log.info("startup completed in %.0f ms", (time.monotonic() - self.started) * 1000)

    async def _open_store(self) -> None:
        directory = str(self.settings.resolved_state_dir)
        try:
            store = await asyncio.to_thread(Store, directory)
        except (OSError, StoreError) as exc:
            raise StartupError(f"cannot open the state store in {directory}: {exc}") from None
        self.store = store
        log.info("state store: %s", store.path)

    async def _start_workers(self) -> None:
        s = self.settings
        self.pool = WorkerPool(
            s.workers,
            s.driver,
            init={
                "owner": s.name,
                "src_ip": str(s.src_ip),
                "vxlan_port": s.vxlan_port,
                "wireguard_backend": s.wireguard_backend,
                "operation_timeout": s.operation_timeout.total_seconds(),
                "vpp_api_socket": str(s.vpp_api_socket),
                "vpp_api_dir": str(s.vpp_api_dir),
                "vpp_stats_socket": str(s.vpp_stats_socket),
                "vpp_uplink": s.vpp_uplink,
                "vpp_connect_timeout": s.vpp_connect_timeout.total_seconds(),
                "vpp_allow_vhost": s.allow_vhost,
            },
            timeout=s.operation_timeout.total_seconds(),
            log_level=s.log_level,
            faults=s.faults,
            on_restart=self.restarts.record,
            log_format=s.log_format,
            trace_endpoint=s.otlp_endpoint if s.tracer_enabled else "",
            loop=self.loop,
        )
        try:
            await asyncio.to_thread(self.pool.start, self._startup_wait())
        except ForwarderError as exc:
            raise StartupError(f"the {s.driver} driver cannot work here: {exc.message}") from None
        caps = self.pool.capabilities
        wg = caps.get("wireguard")
        log.info(
            "mechanisms: local %s, remote %s%s",
            ", ".join(caps.get("local", [])) or "none",
            ", ".join(caps.get("remote", [])) or "none",
            f" (WireGuard: {wg})" if wg else "",
        )
        self.health.set_goal("workers")

    async def _start_monitor(self) -> None:
        self.xcon_monitor = CrossConnectMonitorService(
            self.stopping,
            self.faults["frontend"],
            queue_limit=self.settings.subscriber_queue,
            max_subscribers=self.settings.max_monitor_subscribers,
        )
        self._spawn_monitor(first_seq=0)
        self.xcon_monitor.attach(self.monitor)

    def _spawn_monitor(self, first_seq: int) -> None:
        self.monitor.ref = MonitorActor.start(
            self.xcon_monitor.deliver, first_seq, faults=self.faults["monitor"]
        )

    def _startup_wait(self) -> float:
        """Deadline of a start-up step that is more than one operation (spawning the workers,
        the node-wide scan of reconcile): at least 3 operation timeouts, at least 30 s."""
        return max(30.0, 3 * self.settings.operation_timeout.total_seconds())

    async def _reconcile(self) -> None:
        assert self.pool is not None and self.store is not None
        timeout = 4 * self.settings.operation_timeout.total_seconds() + 1
        caps = self.pool.capabilities
        egress = caps.get("egress") or {}
        offer = Offer(
            driver=self.settings.driver,
            local=tuple(caps.get("local", ())),
            remote=tuple(caps.get("remote", ())),
            base_dir=str(self.settings.base_dir),
        )
        self.connections = Connections(
            self.pool,
            self.monitor,
            self.store,
            planner(self.settings.mtu, int(egress.get("mtu") or DEFAULT_EGRESS_MTU), offer),
            timeout=timeout,
            faults=self.faults["connection"],
            on_restart=self.restarts.record,
            # as many Closes' batches at once as the workers can wait on
            remover=RemoveBatcher(
                self.pool, slots=self.settings.workers * int(caps.get("remove_slots", 1))
            ),
        )
        live = set(await asyncio.to_thread(all_namespaces))
        try:
            report = await asyncio.to_thread(
                reconcile, self.store, self.pool, live, self._startup_wait()
            )
        except ForwarderError as exc:
            raise StartupError(f"reconcile failed: {exc.message}") from None
        for record in report.restored:
            assert record.xcon is not None
            self.connections.restore(record)
            self.monitor.tell(XconnUpdated(xcon=record.xcon))
        self.dataplane = DataplaneWatch(self.pool, self.monitor, self.connections)
        await self.dataplane.start(self.MONITOR_TIMEOUT)
        self.health.set_goal("reconciled")
        log.info("reconcile: %s", report.summary())

    async def _start_grpc(self) -> None:
        s = self.settings
        assert self.pool is not None and self.connections is not None
        caps = self.pool.capabilities
        frontend = self.faults["frontend"]
        update = mechanism_update(tuple(caps["local"]), tuple(caps["remote"]), str(s.src_ip))
        try:
            self.transport = Transport(tls_settings_from(dict(s)))
        except TransportConfigError as exc:
            raise StartupError(str(exc)) from None
        if not await self.transport.start(self.stopping):
            raise StartupError("stopped while waiting for the TLS identity")
        try:
            self.api.listen(
                ForwarderService(
                    self.connections,
                    self.metrics,
                    frontend,
                    max_concurrent=s.max_concurrent_rpcs,
                    max_cross_connects=s.max_cross_connects,
                ),
                MechanismsService(
                    update,
                    self.stopping,
                    frontend,
                    self._unwatched,
                    max_streams=s.max_monitor_subscribers,
                ),
                self.xcon_monitor,
                self.transport,
            )
        except ListenError as exc:
            raise StartupError(str(exc)) from None
        self.health.set_goal("socket_listening")
        await self.api.serve()
        self.health.set_goal("serving")
        log.info("serving the forwarder API on %s", self.api.address)
        log.info("CrossConnect - Serve starting...")  # upstream's line; its tests wait for it

    def _unwatched(self) -> None:
        """nsmd stopped reading MonitorMechanisms, i.e. it dropped us: register again."""
        if self.registrar is not None:
            log.warning("nsmd stopped watching this forwarder's mechanisms; registering again")
            self.registrar.renew("nsmd stopped watching MonitorMechanisms")

    async def _start_health(self) -> None:
        try:
            await self.health.start()
        except OSError as exc:
            raise StartupError(
                f"cannot serve probes on {self.settings.health_host}:"
                f"{self.settings.health_port}: {exc.strerror}"
            ) from None

    async def _start_registrar(self) -> None:
        s = self.settings
        self.registrar = Registrar(
            name=s.name,
            forwarder_socket=self.api.socket_path or s.socket,
            registrar_socket=s.registrar_socket,
            registrar_socket_type=s.registrar_socket_type,
            retry_interval=s.reregister_interval.total_seconds(),
            rpc_timeout=s.registrar_timeout.total_seconds(),
            faults=self.faults["registrar"],
            dial=self.transport.dial if self.transport else grpc.aio.insecure_channel,
        )
        registrar = self.registrar
        self.metrics.registration_state = lambda: registrar.state.value
        await self.registrar.start()
        self.health.set_goal("registration")

    # --- periodic work ------------------------------------------------------------------------

    def _start_loops(self) -> None:
        s, connections = self.settings, self.connections
        assert connections is not None
        self.metrics.pool = self.pool
        self.metrics.monitor = self.monitor

        async def pods() -> None:
            await check_pods(self.monitor, connections, self.MONITOR_TIMEOUT)

        loops: list[tuple[str, float, Callable[[], Awaitable[None]]]] = [
            ("pod liveness check", s.liveness_interval.total_seconds(), pods),
            ("metrics collection", s.metrics_period.total_seconds(), self.metrics.poll),
            ("watchdog", self.WATCHDOG_INTERVAL, self._check_actors),
        ]
        if self.dataplane is not None and self.dataplane.epoch:
            loops.append(("data-plane check", s.liveness_interval.total_seconds(), self._dataplane))
        self._loops = [
            asyncio.create_task(every(self.stopping, interval, what, action), name=what)
            for what, interval, action in loops
        ]

    async def _dataplane(self) -> None:
        if self.dataplane is not None:
            await self.dataplane.check(self.MONITOR_TIMEOUT)

    async def _check_actors(self) -> None:
        """The watchdog: restart the Monitor or the Registrar when it died or stopped answering."""
        why = await monitor_trouble(self.monitor, self.MONITOR_TIMEOUT)
        if why is not None:
            await self._restart_monitor(why)
        registrar = self.registrar
        if registrar is not None and registrar.crashed() is not None:
            log.warning("the registrar %s; restarting it", registrar.crashed())
            self.restarts.record("registrar")
            await registrar.stop(unregister=False)
            await self._start_registrar()

    async def _restart_monitor(self, why: str) -> None:
        """A new Monitor from the Store; subscribers get the changes they missed."""
        assert self.store is not None
        log.warning("the monitor %s; restarting it from the Store", why)
        self.restarts.record("monitor")
        old = self.monitor.ref
        self._spawn_monitor(self.xcon_monitor.last_seq + 1_000_000)  # above all the old one sends
        if old is not None:
            old.stop(block=False)
        rows = await asyncio.to_thread(self.store.load)
        self.monitor.tell(Reload(xcons=[r.xcon for r in rows if r.xcon and r.applied]))
        async with asyncio.timeout(self.MONITOR_TIMEOUT):
            now = await self.monitor.ask(ListXconns())
        self.xcon_monitor.resync(now)

    # --- run and shutdown ----------------------------------------------------------------------

    async def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            try:
                await self.start()
            except StartupError as exc:
                if self.stopping.is_set():  # a signal during start-up: a normal stop
                    log.info("start-up interrupted: %s", exc)
                    return self.exit_code
                log.error("start-up failed: %s", exc)
                return 1
            await self.stopping.wait()
            return self.exit_code
        finally:
            await self.shutdown()

    def _on_signal(self, sig: int) -> None:
        log.info("received %s; shutting down", signal.Signals(sig).name)
        self.stopping.set()

    def _give_up_threadsafe(self, reason: str) -> None:
        self.loop.call_soon_threadsafe(self._give_up, reason)

    def _give_up(self, reason: str) -> None:
        log.error("%s; shutting down with exit code %d", reason, self.EXIT_RESTARTS)
        self.exit_code = self.EXIT_RESTARTS
        self.stopping.set()

    async def shutdown(self) -> None:
        self.stopping.set()
        start = time.monotonic()
        for task in self._loops:
            task.cancel()
        if self.registrar is not None:
            await self.registrar.stop(unregister=True)
            log.info("shutdown 1/5: registration withdrawn")
        if await self.api.stop():
            log.info("shutdown 2/5: stopped serving")
        self.api.remove_socket()
        if self.transport is not None:
            await self.transport.close()
        log.info("shutdown 3/5: socket removed")
        if self.connections is not None:
            self.connections.stop()
        if self.monitor.ref is not None:
            self.monitor.ref.stop(block=False)
        log.info("shutdown 4/5: actors stopped")
        if self.pool is not None:
            await asyncio.to_thread(self.pool.stop)
        if self.store is not None:
            self.store.close()
        await self.health.stop()
        await asyncio.to_thread(tracing.shutdown)  # flush the spans still batched
        log.info(
            "shutdown 5/5: workers stopped; done in %.0f ms", (time.monotonic() - start) * 1000
        )


async def serve(settings: Settings) -> int:
    """Run a forwarder until SIGTERM / SIGINT (or the restart limit); return the exit code."""
    return await Supervisor(settings).run()

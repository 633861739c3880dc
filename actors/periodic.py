"""The periodic work of a running forwarder: pod liveness, metrics polling, the watchdog probe.

Accepts:  nothing; the Supervisor runs each body under ``every(...)`` once start-up is done, and
          the loop ends with its ``stopping`` event.
Sends:    ListXconns (ask) to the Monitor; MarkDown (ask) to the ConnectionActor of a
          cross-connect whose pod network namespace disappeared (an UPDATE event follows; nsmd
          closes or heals on it); Rebuild (ask) to every ConnectionActor when the data plane
          restarted (a new VPP instance: it lost every object), and WorkerCall "epoch" to the
          pool to notice that.
Guarantees: a tick that fails is logged and the loop tries again at the next interval; no actor
          thread sleeps on a timer (each tick asks the actors, which answer at once).
Threads:  the asyncio loop of the main process; the namespace scan runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pykka

from nsm_forwarder.actors.connections import Connections
from nsm_forwarder.actors.messages import ListXconns, MarkDown, Rebuild
from nsm_forwarder.actors.runtime import Link
from nsm_forwarder.actors.workers import WorkerPool
from nsm_forwarder.actors.xcons import LIVE_ENDS
from nsm_forwarder.drivers.errors import ForwarderError
from nsm_forwarder.drivers.linux.netns import all_namespaces
from nsm_forwarder.proto import connection_pb2, crossconnect_pb2

log = logging.getLogger("nsm_forwarder.supervisor")


async def every(
    stopping: asyncio.Event, interval: float, what: str, action: Callable[[], Awaitable[None]]
) -> None:
    """Run ``action`` every ``interval`` seconds until ``stopping`` is set; errors are logged."""
    while not stopping.is_set():
        try:
            async with asyncio.timeout(interval):
                await stopping.wait()
            return
        except TimeoutError:
            pass
        try:
            await action()
        except Exception:
            log.exception("%s failed; trying again next interval", what)


async def check_pods(monitor: Link, connections: Connections, timeout: float) -> None:
    """Mark DOWN every UP end whose pod network namespace is gone (one MarkDown per xcon)."""
    async with asyncio.timeout(timeout):
        xcons = await monitor.ask(ListXconns())
    if not xcons:
        return
    live = set(await asyncio.to_thread(all_namespaces))
    for data, (_, ends) in zip(xcons, LIVE_ENDS.of(xcons), strict=True):
        if all(inode in live for _, inode, _ in ends):
            continue  # the common case: nothing to parse
        xcon = crossconnect_pb2.CrossConnect.FromString(data)
        gone = [
            side
            for side, inode, _ in ends
            if inode not in live and getattr(xcon, side).state == connection_pb2.UP
        ]
        if gone:
            await connections.ask(xcon.id, MarkDown(sides=gone))


async def monitor_trouble(monitor: Link, timeout: float) -> str | None:
    """None if the Monitor answers within ``timeout``, else "died" or "stopped answering"."""
    try:
        async with asyncio.timeout(timeout):
            await monitor.ask(ListXconns())
    except pykka.ActorDeadError:
        return "died"
    except TimeoutError:
        return "stopped answering"
    return None


class DataplaneWatch:
    """Notices a data-plane restart (the driver's ``epoch`` changes: VPP restarted and lost
    every object) and has every cross-connect rebuilt, each reported with an UPDATE. A driver
    whose epoch is empty (the kernel) is never polled."""

    def __init__(self, pool: WorkerPool, monitor: Link, connections: Connections) -> None:
        self.pool, self.monitor, self.connections = pool, monitor, connections
        self.epoch = ""
        self._unreachable = False

    async def start(self, timeout: float) -> None:
        self.epoch = str(await self.pool.acall("epoch"))

    async def check(self, timeout: float) -> None:
        try:
            now = str(await self.pool.acall("epoch"))
        except ForwarderError as exc:
            if not self._unreachable:
                log.warning("the data plane is unreachable: %s", exc.message)
            self._unreachable = True
            return
        if self._unreachable:
            log.info("the data plane is reachable again")
            self._unreachable = False
        if now == self.epoch:
            return
        why = f"a data-plane restart (instance {self.epoch} -> {now})"
        async with asyncio.timeout(timeout):
            xcons = await self.monitor.ask(ListXconns())
        log.warning("%s: rebuilding %d cross-connects", why, len(xcons))
        self.epoch = now
        rebuilt = 0
        for data in xcons:
            xcon = crossconnect_pb2.CrossConnect.FromString(data)
            if await self.connections.ask(xcon.id, Rebuild(why=why)):
                rebuilt += 1
        log.info("%d of %d cross-connects rebuilt after %s", rebuilt, len(xcons), why)

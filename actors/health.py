"""Health: HTTP probes for Kubernetes (``/liveness``, ``/readiness``) and Prometheus
``/metrics`` on the health port.

Accepts:  HTTP GET requests; ``set_goal(name, done)`` from the Supervisor as start-up advances.
Sends:    nothing.
Guarantees: ``/liveness`` answers 200 ``OK`` while the process runs; ``/readiness`` answers
          200 ``OK`` only when every start-up goal is met, otherwise 503 with a body naming
          each goal and whether it is met, so an operator sees which step is missing.
Threads:  the asyncio loop of the main process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Start-up goals, in the order they are reached.
GOALS = ("workers", "reconciled", "socket_listening", "serving", "registration")

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class Health:
    def __init__(self, host: str, port: int, metrics: Callable[[], bytes] | None = None) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.goals: dict[str, bool] = dict.fromkeys(GOALS, False)
        self._server: asyncio.AbstractServer | None = None

    def set_goal(self, name: str, done: bool = True) -> None:
        if name not in self.goals:
            raise KeyError(name)
        self.goals[name] = done

    @property
    def ready(self) -> bool:
        return all(self.goals.values())

    def readiness(self) -> tuple[int, str]:
        if self.ready:
            return 200, "OK\n"
        missing = [g for g, done in self.goals.items() if not done]
        states = ", ".join(f"{g}: {'yes' if done else 'no'}" for g, done in self.goals.items())
        return 503, f"not ready, waiting for {', '.join(missing)} ({states})\n"

    async def start(self) -> int:
        """Listen; return the bound port (useful when configured as 0)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health probes on http://%s:%d/{liveness,readiness,metrics}", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def route(self, method: str, path: str) -> tuple[int, str]:
        if method not in ("GET", "HEAD"):
            return 405, "only GET\n"
        path = path.split("?", 1)[0]
        if path == "/liveness":
            return 200, "OK\n"
        if path == "/readiness":
            return self.readiness()
        if path == "/metrics" and self.metrics is not None:
            return 200, self.metrics().decode()
        return 404, "not found; try /liveness, /readiness or /metrics\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            status, body = self.route(*parts[:2]) if len(parts) >= 2 else (405, "bad request\n")
            data = body.encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (data if parts[:1] != ["HEAD"] else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

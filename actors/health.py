"""Health: HTTP probes for Kubernetes (``/liveness``, ``/readiness``) and Prometheus
``/metrics`` on the health port.

Accepts:  HTTP requests; ``set_goal(name, done)`` from the Supervisor as start-up advances.
Sends:    nothing.
Guarantees: ``/liveness`` answers 200 ``OK`` while the process runs; ``/readiness`` answers
          200 ``OK`` only when every start-up goal is met, otherwise 503 with a body naming
          each goal and whether it is met, so an operator sees which step is missing;
          ``/metrics`` is prometheus_client's own WSGI exposition of the registry (text format,
          OpenMetrics when asked, gzip, ``name[]`` filters).
Threads:  a small WSGI server (the standard library's, threaded as prometheus_client's own
          ``start_wsgi_server``) on a daemon thread of the main process; ``start``/``stop`` are
          called from the asyncio loop. A probe reads ``goals`` (a dict of bools) only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

#: Start-up goals, in the order they are reached.
GOALS = ("workers", "reconciled", "socket_listening", "serving", "registration")

_STATUS = {
    200: "200 OK",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    503: "503 Service Unavailable",
}


class _Server(ThreadingWSGIServer):
    """prometheus_client's threading WSGI server, for IPv4 or IPv6, without the reverse DNS
    look-up of the bind address that ``HTTPServer.server_bind`` makes."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the DEBUG log, not stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("probe %s: " + format, self.client_address[0], *args)


def _family(host: str, port: int) -> socket.AddressFamily:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]


class Health:
    """The probe server: ``await start()`` (returns the port), ``set_goal``, ``await stop()``.

    ``registry``: what ``/metrics`` exposes (no ``/metrics`` without one); ``on_scrape`` is
    called before each scrape (the Metrics note that someone reads the counters)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry | None = None,
        on_scrape: Callable[[], None] = lambda: None,
    ) -> None:
        self.host = host
        self.port = port
        self.goals: dict[str, bool] = dict.fromkeys(GOALS, False)
        self.on_scrape = on_scrape
        self._metrics = make_wsgi_app(registry) if registry is not None else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

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
        """Listen; return the bound port (useful when configured as 0). Raises OSError."""
        family = _family(self.host, self.port)

        class Server(_Server):
            address_family = family

        server = make_server(
            self.host, self.port, self.app, server_class=Server, handler_class=_QuietHandler
        )
        assert isinstance(server, _Server)
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="health", daemon=True
        )
        self._thread.start()
        log.info("health probes on http://%s:%d/{liveness,readiness,metrics}", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()

    def route(self, method: str, path: str) -> tuple[int, str]:
        if method not in ("GET", "HEAD"):
            return 405, "only GET\n"
        if path == "/liveness":
            return 200, "OK\n"
        if path == "/readiness":
            return self.readiness()
        return 404, "not found; try /liveness, /readiness or /metrics\n"

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI application: ``/metrics`` to prometheus_client, the probes here."""
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        if path == "/metrics" and self._metrics is not None and method in ("GET", "HEAD"):
            self.on_scrape()
            body: Iterable[bytes] = self._metrics(environ, start_response)
            return [] if method == "HEAD" else body
        status, text = self.route(method, path)
        data = text.encode()
        start_response(
            _STATUS[status],
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))],
        )
        return [] if method == "HEAD" else [data]

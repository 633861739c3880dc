"""Restart intensity: count restarts per kind and notice when there are too many.

One-for-one supervision restarts a dead or hung actor or worker at once. When more than
``max_restarts`` happen within ``window`` seconds, something is broken beyond what restarting
fixes: :class:`Restarts` then calls ``on_exceeded`` once, and the Supervisor exits non-zero so
that Kubernetes restarts the pod (and the Store brings every cross-connect back).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: What supervision restarts; a restart's kind is one of these, a worker's ``worker-<index>``.
COMPONENTS = ("worker", "connection", "monitor", "registrar")


class Restarts:
    """Thread-safe: workers report from their receive threads, actors from the loop."""

    def __init__(
        self, max_restarts: int, window: float, on_exceeded: Callable[[str], None]
    ) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.on_exceeded = on_exceeded
        self.by_kind: collections.Counter[str] = collections.Counter()
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._exceeded = False

    def by_component(self) -> dict[str, int]:
        """Restarts so far by component (a worker's kind ``worker-N`` counts as ``worker``)."""
        with self._lock:
            kinds = list(self.by_kind.items())
        out: dict[str, int] = {}
        for kind, count in kinds:
            component = kind.partition("-")[0]
            out[component] = out.get(component, 0) + count
        return out

    def record(self, kind: str) -> None:
        """One restart of ``kind`` (a component of :data:`COMPONENTS`, or ``worker-N``)."""
        now = time.monotonic()
        with self._lock:
            self.by_kind[kind] += 1
            self._times.append(now)
            while self._times and self._times[0] < now - self.window:
                self._times.popleft()
            recent = len(self._times)
            fire = recent > self.max_restarts and not self._exceeded
            self._exceeded = self._exceeded or fire
        log.warning("restarted %s (%d restarts in the last %.0f s)", kind, recent, self.window)
        if fire:
            self.on_exceeded(
                f"restart intensity exceeded: {recent} restarts within {self.window:.0f} s "
                f"(limit {self.max_restarts}); last: {kind}"
            )

"""glibc malloc tuning of the main process: at most :data:`ARENAS` malloc arenas.

Accepts:  :func:`limit_arenas`, called once at start, before the process starts its threads.
Guarantees: glibc gives each thread that contends for malloc an arena of its own, up to 8 per
          core; the main process runs a dozen threads and more under load (gRPC's, the Monitor's,
          the asyncio executor's), and each arena keeps the memory its thread once used. Two
          arenas (the number of cores the forwarder is sized for) keep ~1.5 MiB less after the
          benchmark's load. A ``MALLOC_ARENA_MAX`` in the environment wins (glibc read it at
          start); where there is no glibc ``mallopt`` (musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

#: arenas of the main process
ARENAS = 2
#: mallopt's parameter number for the arena limit (malloc.h)
M_ARENA_MAX = -8


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Limit malloc to ``arenas`` arenas; True if it was set here."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    if mallopt(M_ARENA_MAX, arenas) != 1:
        log.debug("mallopt(M_ARENA_MAX, %d) failed", arenas)
        return False
    return True

"""The main process's malloc arena limit: threads share two arenas instead of one each (a fresh
interpreter per check; glibc's malloc_stats counts the arenas)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

THREADS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from nsm_forwarder.actors.malloc import limit_arenas
    print(limit_arenas(), flush=True)
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    barrier = threading.Barrier(8)
    def work():
        barrier.wait()
        kept = [libc.malloc(1000) for _ in range(100)]
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    libc.malloc_stats()
    """
)


def arenas(env: dict[str, str]) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", THREADS], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr.count("Arena ")


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux only")
def test_malloc_limit_arenas_caps_the_arenas_of_threads() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    set_here, count = arenas(env)
    if set_here == "False":
        pytest.skip("no glibc mallopt here")
    assert set_here == "True" and count == 2
    # the environment's own limit wins (and glibc applies it)
    assert arenas({**env, "MALLOC_ARENA_MAX": "3"}) == ("False", 3)

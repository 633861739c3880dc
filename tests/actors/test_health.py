"""HTTP probes: 503 naming the missing start-up steps until every goal is met."""

from __future__ import annotations

import asyncio

from nsm_forwarder.actors.health import GOALS, Health


async def _get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


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

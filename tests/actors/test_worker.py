"""The worker's serve loop (actors/worker.py): a call the driver finishes later (a Future) is
answered when it is done, while the calls after it are answered meanwhile; its failure is an
error reply like any other."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import Future
from typing import Any

from nsm_forwarder.actors.messages import Decoder, Message, WorkerCall, WorkerReply, pack
from nsm_forwarder.actors.worker import Faults, serve
from nsm_forwarder.drivers.errors import NotFound
from tests.helpers import wait_until


class LaterDriver:
    """remove_many answers through a future the test resolves; apply answers at once."""

    def __init__(self) -> None:
        self.pending: list[Future[list[Any]]] = []

    def remove_many(self, records: list[Any]) -> Future[list[Any]]:
        done: Future[list[Any]] = Future()
        self.pending.append(done)
        return done

    def apply(self, plan: Any) -> Any:
        return {"applied": plan}


def replies(sock: socket.socket, decoder: Decoder, count: int) -> list[Message]:
    got: list[Message] = []
    while len(got) < count:
        data = sock.recv(65536)
        assert data, "the worker closed its socket"
        got += decoder.feed(data)
    return got


def test_a_deferred_call_is_answered_when_done_and_others_meanwhile() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    driver = LaterDriver()
    server = threading.Thread(
        target=serve, args=(theirs, driver, Faults(0, "")), daemon=True, name="serve"
    )
    server.start()
    try:
        decoder = Decoder()
        ours.sendall(pack(WorkerCall(1, "remove_many", [[{"id": "a"}]])))
        ours.sendall(pack(WorkerCall(2, "apply", [{"id": "b"}])))
        ours.sendall(pack(WorkerCall(3, "remove_many", [[{"id": "c"}]])))
        (first,) = replies(ours, decoder, 1)
        assert first == WorkerReply(corr=2, ok=True, result={"applied": {"id": "b"}})
        wait_until(lambda: len(driver.pending) == 2, 10, "the third call taken")
        driver.pending[1].set_exception(NotFound("gone"))
        driver.pending[0].set_result([None])
        later = {r.corr: r for r in replies(ours, decoder, 2) if isinstance(r, WorkerReply)}
        assert later[1] == WorkerReply(corr=1, ok=True, result=[None])
        assert not later[3].ok and (later[3].error or {}).get("code") == "NOT_FOUND"
    finally:
        ours.close()
        server.join(10)
        theirs.close()
    assert not server.is_alive()  # EOF ends the loop

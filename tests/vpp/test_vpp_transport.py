"""VppApi's connection (drivers/vpp/transport.py: replies read by the calling thread) against the
protocol-level VPP: the handshake and calls, no thread of vpp_papi's, a goodbye on close, and a
VPP that stops answering is a retriable UNAVAILABLE after the read timeout."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from nsm_forwarder.drivers.vpp.api import VppApi, VppUnavailable
from tests.vpp.peer import FakeVPP
from tests.vpp.peer.apidefs import default_api_dir
from tests.vpp.peer.testing import running_fake, short_dir

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake() -> Iterator[FakeVPP]:
    with short_dir() as path, running_fake(path) as vpp:
        yield vpp


def test_calls_on_the_callers_thread(fake: FakeVPP) -> None:
    """Connect, call, dump, close: the same answers as vpp_papi's own transport gives, and not
    one thread more while connected; closing says goodbye (sockclnt_delete)."""
    api = VppApi(fake.api_socket, str(default_api_dir()), name="nsm-transport-test")
    api.connect()
    try:
        # vpp_papi's socket transport reads replies on a thread of its own (msg_thread_func)
        # and hands them over through a queue; ours has none (other tests' threads may come
        # and go meanwhile, so only those of vpp_papi are looked for)
        papi = [t.name for t in threading.enumerate() if "msg_thread_func" in t.name]
        assert papi == [], papi
        assert str(api.call("show_version").version) == "26.06-release"
        (local0,) = api.dump("sw_interface_dump", sw_if_index=0)
        assert str(local0.interface_name) == "local0"
        assert api.instance() == api.instance()  # a tag set, then read back
        assert set(fake.clients().values()) == {"nsm-transport-test"}
    finally:
        api.close()
    assert fake.calls[0] == "sockclnt_create" and fake.calls[-1] == "sockclnt_delete"
    assert fake.clients() == {}


def _read_message(conn: socket.socket) -> bytes:
    header = _read_exactly(conn, 16)
    (length,) = struct.unpack_from(">I", header, 8)
    return header + _read_exactly(conn, length)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _silent_after_hello(upstream: str, path: str) -> socket.socket:
    """A socket at ``path`` passing each client's handshake to ``upstream`` (a VPP), then
    reading what the client sends and answering nothing."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    def serve(conn: socket.socket) -> None:
        with conn, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as vpp:
            vpp.connect(upstream)
            vpp.sendall(_read_message(conn))
            conn.sendall(_read_message(vpp))
            while conn.recv(65536):
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server


def test_a_silent_vpp_is_unavailable_after_the_read_timeout(fake: FakeVPP) -> None:
    path = os.path.join(os.path.dirname(fake.api_socket), "silent.sock")
    with _silent_after_hello(fake.api_socket, path):
        api = VppApi(path, str(default_api_dir()), connect_timeout=2.0, read_timeout=0.5)
        api.connect()
        started = time.monotonic()
        with pytest.raises(VppUnavailable, match="sw_interface_set_flags: lost the VPP API") as err:
            api.call("sw_interface_set_flags", sw_if_index=0, flags=1)
        assert err.value.retriable and 0.4 < time.monotonic() - started < 3
        assert not api.connected  # the next call connects again
        api.close()

"""The protocol-level VPP's fault switches, stats segment, robustness, taps and af_packet."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest
from vpp_papi.vpp_stats import VPPStats

from tests.vpp.peer import FakeVPP, Retval
from tests.vpp.peer.framing import frame
from tests.vpp.peer.testing import add_veth, api_client, link, netns, unique
from tests.vpp.peer_tests.conftest import NO_INDEX, ROOT, memif, names, needs_root


# -- fault switches -------------------------------------------------------------------------
def test_fail_gives_the_retval_and_changes_nothing(api: Any, vpp: FakeVPP) -> None:
    vpp.fail("memif_create_v2", retval=Retval.INVALID_SW_IF_INDEX, count=2)
    for _ in range(2):
        assert api.memif_create_v2(role=0, socket_id=0, id=1).retval == -2
    assert [i.name for i in vpp.interfaces()] == ["local0"]
    assert api.memif_create_v2(role=0, socket_id=0, id=1).retval == 0
    vpp.fail("sw_interface_dump", retval=-1, count=None)
    assert api.sw_interface_dump() == [] and api.sw_interface_dump() == []
    vpp.clear_faults()
    assert len(api.sw_interface_dump()) == 2
    with pytest.raises(ValueError):
        vpp.fail("no_such_message")


@pytest.mark.parametrize("after_apply", [False, True])
def test_drop_on_closes_the_connection(vpp: FakeVPP, after_apply: bool) -> None:
    vpp.drop_on("memif_create_v2", after_apply=after_apply)
    with api_client(vpp.api_socket, "bystander") as other, api_client(vpp.api_socket) as victim:
        with pytest.raises(IOError):
            victim.api.memif_create_v2(role=0, socket_id=0, id=1)
        assert other.api.control_ping().retval == 0
        made = [i.name for i in vpp.interfaces()]
        assert made == (["local0", "memif0/1"] if after_apply else ["local0"])
        assert list(vpp.clients().values()) == ["bystander"]
        assert other.api.memif_create_v2(role=0, socket_id=0, id=2).retval == 0  # one-shot


def test_restart_drops_clients_and_loses_all_state(vpp: FakeVPP) -> None:
    with api_client(vpp.api_socket) as client:
        assert memif(client.api, ident=1) == 1
        client.api.memif_socket_filename_add_del_v2(is_add=True, socket_filename="r.sock")
        vpp.restart(down_for=0.3)
        assert not os.path.exists(vpp.api_socket)
        with pytest.raises(IOError):
            client.api.show_version()
    assert vpp.wait_ready(5)
    with api_client(vpp.api_socket) as again:
        assert names(again.api) == {0: "local0"}
        assert [s.socket_id for s in vpp.memif_sockets()] == [0]
        assert memif(again.api, ident=1) == 1


# -- stats segment --------------------------------------------------------------------------
def test_stats_segment_counters_by_interface_name(api: Any, vpp: FakeVPP) -> None:
    assert vpp.stats_socket is not None
    a, b = memif(api, ident=1), memif(api, ident=2)
    vpp.set_counters(a, rx_packets=10, rx_bytes=1000, tx_packets=4, tx_bytes=400, rx_errors=2)
    stats = VPPStats(vpp.stats_socket)
    stats.connect()
    try:
        assert stats["/if/names"] == ["local0", "memif0/1", "memif0/2"]
        assert stats["/if/rx"][:, a].sum_packets() == 10
        assert stats["/if/rx"][0][a]["bytes"] == 1000
        assert stats["/if/tx"][:, a].sum_octets() == 400
        assert stats["/if/rx-error"][:, a].sum() == 2 and stats["/if/tx-error"][:, b].sum() == 0
        assert stats["/interfaces/memif0_1/rx"].sum_packets() == 10  # symlink, '/' -> '_'
        epoch = stats.epoch
        vpp.set_counters(b, tx_packets=3, tx_bytes=30, drops=5)
        assert stats.epoch > epoch
        assert stats["/if/tx"][:, b].sum_packets() == 3 and stats["/if/drops"][:, b].sum() == 5
        api.memif_delete(sw_if_index=a)
        assert stats["/if/names"] == ["local0", "deleted", "memif0/2"]
        assert memif(api, ident=3) == a
        assert stats["/if/rx"][:, a].sum_packets() == 0  # a new interface starts at zero
    finally:
        stats.disconnect()


# -- robustness -----------------------------------------------------------------------------
def _raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def test_garbage_and_abrupt_clients_do_not_hurt_others(vpp: FakeVPP) -> None:
    with api_client(vpp.api_socket, "good") as good:
        truncated = _raw(vpp.api_socket)  # a known id, too short for its message
        truncated.sendall(frame(vpp.defs.ids["memif_create_v2"].to_bytes(2, "big")))
        assert truncated.recv(100) == b""
        huge = _raw(vpp.api_socket)
        huge.sendall(b"\0" * 8 + (1 << 30).to_bytes(4, "big") + b"\0" * 4)
        assert huge.recv(100) == b""
        unknown = _raw(vpp.api_socket)  # VPP ignores ids it has no handler for
        unknown.sendall(frame(b"\xff\xf0" + b"\0" * 10))
        half = _raw(vpp.api_socket)
        half.sendall(frame(b"\0" * 40)[:20])
        half.close()
        assert good.api.control_ping().retval == 0
        assert "<msg id 65520>" in vpp.unhandled
        unknown.close()
        truncated.close()
        huge.close()


def test_several_clients_at_once(vpp: FakeVPP) -> None:
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with api_client(vpp.api_socket, f"worker-{n}") as client:
                r = client.api.memif_socket_filename_add_del_v2(
                    is_add=True, socket_filename=f"w{n}.sock"
                )
                for ident in range(5):
                    memif(client.api, r.socket_id, ident, role=1)
                    assert client.api.control_ping().retval == 0
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == []
    memifs = [i for i in vpp.interfaces() if i.memif is not None]
    assert len(memifs) == 20 and {i.sw_if_index for i in memifs} == set(range(1, 21))


def test_standalone_process_until_sigterm(workdir: str) -> None:
    sock = f"{workdir}/api.sock"
    cmd = [
        sys.executable,
        "-m",
        "tests.vpp.peer",
        "--api-socket",
        sock,
        "--stats-socket",
        f"{workdir}/s.sock",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and "ready" in proc.stdout.readline()
        with api_client(sock) as client:
            assert client.api.show_version().program == "vpe"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not os.path.exists(sock)
    finally:
        proc.kill()
        proc.wait()


# -- tap ------------------------------------------------------------------------------------
def test_tap_without_vhost_net_is_syscall_error_1(api: Any, vpp: FakeVPP) -> None:
    r = api.tap_create_v3(host_if_name_set=True, host_if_name=unique("vpt"))
    assert (r.retval, r.sw_if_index) == (Retval.SYSCALL_ERROR_1, NO_INDEX)
    r = api.tap_create_v3(host_namespace_set=True, host_namespace=unique("nons"))
    assert r.retval == Retval.SYSCALL_ERROR_2  # the namespace is opened first
    assert [i.name for i in vpp.interfaces()] == ["local0"]


@needs_root
def test_tap_with_vhost_net_makes_a_real_tap(workdir: str) -> None:
    with netns() as ns:
        fake = FakeVPP(api_socket=f"{workdir}/api.sock", stats_socket=None, vhost_net=True)
        fake.start()
        try:
            with api_client(fake.api_socket) as client:
                name = unique("vpt")
                kwargs = {
                    "host_if_name_set": True,
                    "host_if_name": name,
                    "host_namespace_set": True,
                    "host_namespace": ns,
                    "host_ip4_prefix_set": True,
                    "host_ip4_prefix": "10.9.0.2/30",
                    "tag": "t1",
                }
                r = client.api.tap_create_v3(**kwargs)
                assert r.retval == 0
                (d,) = client.api.sw_interface_dump(sw_if_index=r.sw_if_index)
                assert (d.interface_name, d.interface_dev_type, d.tag) == ("tap0", "tap", "t1")
                got = link(ns, name)
                assert got is not None and got["kind"] == "tun" and got["up"]
                assert (
                    client.api.tap_create_v3(**{**kwargs, "id": 0}).retval
                    == Retval.INVALID_INTERFACE
                )
                assert client.api.tap_delete_v2(sw_if_index=r.sw_if_index).retval == 0
                assert link(ns, name) is None
                assert (
                    client.api.tap_delete_v2(sw_if_index=r.sw_if_index).retval
                    == Retval.INVALID_SW_IF_INDEX
                )
                assert client.api.tap_create_v3(**kwargs).retval == 0
            fake.restart(down_for=0.1, wait=True)  # VPP dies: a non-persistent tap goes
            assert link(ns, name) is None
        finally:
            fake.stop()


# -- af_packet ------------------------------------------------------------------------------
@needs_root
def test_af_packet_on_a_veth_in_vpps_namespace(workdir: str) -> None:
    with netns() as ns:
        host, peer = unique("vpa"), unique("vpb")
        add_veth(ns, host, peer)
        fake = FakeVPP(api_socket=f"{workdir}/api.sock", stats_socket=None, netns=ns)
        fake.start()
        try:
            with api_client(fake.api_socket) as client:
                create = client.api.af_packet_create_v3
                r = create(mode=1, host_if_name=host, use_random_hw_addr=True)
                assert (r.retval, r.sw_if_index) == (0, 1)
                assert names(client.api)[1] == f"host-{host}"
                state = link(ns, host)
                assert state is not None and state["up"]  # VPP brings the host side up
                dup = create(mode=1, host_if_name=host, use_random_hw_addr=True)
                assert (dup.retval, dup.sw_if_index) == (Retval.IF_ALREADY_EXISTS, 1)
                missing = create(mode=1, host_if_name=unique("vpm"), use_random_hw_addr=True)
                assert missing.retval == Retval.INVALID_INTERFACE
                assert create(mode=0, host_if_name=peer).retval == Retval.INVALID_VALUE
                dumped = [(d.sw_if_index, d.host_if_name) for d in client.api.af_packet_dump()]
                assert dumped == [(1, host)]
                assert client.api.sw_interface_set_flags(sw_if_index=1, flags=1).retval == 0
                assert client.api.af_packet_delete(host_if_name=host).retval == 0
                state = link(ns, host)
                assert state is not None and not state["up"]  # admin-down on delete
                assert (
                    client.api.af_packet_delete(host_if_name=host).retval == Retval.SYSCALL_ERROR_1
                )
                fake.fail("af_packet_create_v3", retval=-2)
                assert create(mode=1, host_if_name=host, use_random_hw_addr=True).retval == -2
                assert create(mode=1, host_if_name=host, use_random_hw_addr=True).sw_if_index == 1
        finally:
            fake.stop()

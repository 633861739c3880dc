"""The two-node test bed: two node namespaces joined by a veth underlay, one forwarder running
inside each (``NSM_FORWARDER_SRC_IP`` = its underlay address), each with its own registrar
stand-in; pods are plain namespaces. Everything (forwarders, their workers, wireguard-go daemons
started by them, pods, nodes) is removed after each test, pass or fail."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from nsm_forwarder.drivers.kernel import wireguard
from tests.conftest import Node
from tests.helpers import (
    BackgroundLoop,
    Pod,
    Pods,
    Underlay,
    make_underlay,
    sh,
    wireguard_pids,
)


@dataclass
class TwoNodes:
    underlay: Underlay
    a: Node
    b: Node
    pods: Pods

    @property
    def a_ip(self) -> str:
        return self.underlay.a_ip

    @property
    def b_ip(self) -> str:
        return self.underlay.b_ip

    def pod(self) -> Pod:
        return self.pods.make()

    def node_links(self, node: str) -> list[str]:
        """Interfaces of node namespace ``a`` or ``b`` (normally only lo and the underlay)."""
        name = self.underlay.a if node == "a" else self.underlay.b
        out = sh("ip", "-n", name, "-o", "link", "show")
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())

    def daemons(self) -> dict[int, str]:
        """wireguard-go daemons whose UDP sockets live in one of the two node namespaces."""
        return daemons_in(node_inodes(self.underlay))


def node_inodes(u: Underlay) -> set[int]:
    inodes = set()
    for name in (u.a, u.b):
        try:
            inodes.add(os.stat(f"/var/run/netns/{name}").st_ino)
        except OSError:
            pass
    return inodes


def daemons_in(inodes: set[int]) -> dict[int, str]:
    found = {}
    for pid, device in wireguard_pids().items():
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                found[pid] = device
        except OSError:
            continue
    return found


def stop_daemons(inodes: set[int]) -> None:
    """Kill every wireguard-go daemon running in these namespaces (after a failed test) and
    remove its socket and log."""
    killed = daemons_in(inodes)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while daemons_in(inodes) and time.monotonic() < deadline:
        time.sleep(0.02)
    for device in killed.values():
        wireguard.remove_files(device)


@pytest.fixture
def two_nodes_factory(bg_loop: BackgroundLoop, pods: Pods) -> Iterator[Callable[..., TwoNodes]]:
    """``make(v6=False, **env)``: a fresh two-node bed with both forwarders registered."""
    made: list[TwoNodes] = []

    def make(v6: bool = False, **env: str) -> TwoNodes:
        """``env``: of both forwarders; WireGuard is wireguard-go unless it says otherwise."""
        env.setdefault("NSM_FORWARDER_WIREGUARD_BACKEND", "userspace")
        u = make_underlay(v6)
        bed = TwoNodes(
            u,
            Node(bg_loop, netns=u.a, NSM_FORWARDER_SRC_IP=u.a_ip, **env),
            Node(bg_loop, netns=u.b, NSM_FORWARDER_SRC_IP=u.b_ip, **env),
            pods,
        )
        made.append(bed)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(bed.a.start), pool.submit(bed.b.start)]:
                started.result()
        return bed

    try:
        yield make
    finally:
        for bed in made:
            inodes = node_inodes(bed.underlay)
            bed.a.close()
            bed.b.close()
            stop_daemons(inodes)
            bed.underlay.delete()


@pytest.fixture
def two_nodes(two_nodes_factory: Callable[..., TwoNodes]) -> TwoNodes:
    return two_nodes_factory()

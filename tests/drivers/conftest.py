"""Fixtures for driver tests: throwaway network namespaces (root only) and `ip` helpers."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.drivers.nodes import Bed, Node
from tests.helpers import Pod, Pods, Underlay, make_underlay

_counter = itertools.count()
#: every namespace these tests create starts with this (unique per test process)
NS_PREFIX = f"kd{os.getpid() % 1000}n"


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 (creates network namespaces)",
    )


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=20)


@dataclass
class Netns:
    name: str

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.name}"

    @property
    def inode(self) -> int:
        return os.stat(self.path).st_ino

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`ip -n NS ARGS...`"""
        return run("ip", "-n", self.name, *args, check=check)

    def ipj(self, *args: str) -> list[dict[str, Any]]:
        """`ip -j -n NS ARGS...` parsed."""
        out = run("ip", "-j", "-n", self.name, *args).stdout.strip()
        return json.loads(out) if out else []

    def links(self) -> dict[str, dict[str, Any]]:
        """Every interface but lo, by name, with details (alias, group, mtu, kind)."""
        return {
            link["ifname"]: link
            for link in self.ipj("-d", "link", "show")
            if link["ifname"] != "lo"
        }

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.name, *args, check=check)

    def delete(self) -> None:
        run("ip", "netns", "del", self.name, check=False)


@pytest.fixture
def make_netns() -> Iterator[Callable[[], Netns]]:
    """Factory of fresh namespaces; all of them are deleted at teardown, even on failure."""
    created: list[Netns] = []

    def make() -> Netns:
        ns = Netns(f"{NS_PREFIX}{next(_counter)}")
        run("ip", "netns", "add", ns.name)
        created.append(ns)
        return ns

    yield make
    for ns in created:
        ns.delete()


@pytest.fixture
def two_netns(make_netns: Callable[[], Netns]) -> tuple[Netns, Netns]:
    return make_netns(), make_netns()


@pytest.fixture(autouse=True)
def thread_netns_unchanged() -> Iterator[None]:
    """Nothing a driver test does may move the test's own thread to another namespace."""
    before = os.stat("/proc/thread-self/ns/net").st_ino
    yield
    assert os.stat("/proc/thread-self/ns/net").st_ino == before


@pytest.fixture
def bed() -> Iterator[Bed]:
    """``make(v6=False, backend="userspace", b_backend=None)``: a fresh underlay with an
    initialized driver per node (node B's backend defaults to A's); all removed at teardown."""
    made: list[tuple[Underlay, Node, Node]] = []

    def make(
        v6: bool = False, backend: str = "userspace", b_backend: str | None = None
    ) -> tuple[Underlay, Node, Node]:
        u = make_underlay(v6)
        a, b = Node(u.a, u.a_ip, backend), Node(u.b, u.b_ip, b_backend or backend)
        made.append((u, a, b))
        a.init()
        b.init()
        return u, a, b

    try:
        yield make
    finally:
        for u, a, b in made:
            a.close()
            b.close()
            u.delete()


@pytest.fixture
def two_pods(pods: Pods) -> tuple[Pod, Pod]:
    return pods.make(), pods.make()

"""Helpers for tests that run against the fake: short unique names, throw-away network
namespaces with veth pairs, and a connected ``VPPApiClient``."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from vpp_papi import VPPApiClient

from tests.vpp.peer.apidefs import default_api_dir
from tests.vpp.peer.fake import FakeVPP
from tests.vpp.peer.linux import in_netns, ns_path

IS_ROOT = os.geteuid() == 0
_counter = itertools.count()


def unique(prefix: str = "vp") -> str:
    """A name unique to this process that fits IFNAMSIZ (15 characters)."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"[:15]


@contextlib.contextmanager
def short_dir(prefix: str = "vpeer") -> Iterator[str]:
    """A fresh directory with a short path (unix socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_fake(directory: str) -> Iterator[FakeVPP]:
    """A started fake with its API and stats sockets in ``directory``; stopped afterwards, when
    it must have recorded no protocol error."""
    fake = FakeVPP(api_socket=f"{directory}/api.sock", stats_socket=f"{directory}/stats.sock")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    assert fake.errors == []


@contextlib.contextmanager
def netns(prefix: str = "vpeer") -> Iterator[str]:
    """A new network namespace ``<prefix><pid>-<n>``, deleted afterwards with all it holds."""
    name = f"{prefix}{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def add_veth(ns: str, name: str, peer: str) -> None:
    """A veth pair ``name``/``peer``, both in ``ns`` (both down)."""

    def op() -> None:
        with IPRoute() as ipr:
            ipr.link("add", ifname=name, kind="veth", peer=peer)

    in_netns(ns_path(ns), op)


def link(ns: str, name: str) -> dict[str, Any] | None:
    """{"up", "address", "mtu", "kind"} of a link in ``ns``, or None."""

    def op() -> dict[str, Any] | None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                return None
            msg = ipr.get_links(found[0])[0]
            info = msg.get_attr("IFLA_LINKINFO")
            return {
                "up": bool(msg["flags"] & 1),
                "address": msg.get_attr("IFLA_ADDRESS"),
                "mtu": msg.get_attr("IFLA_MTU"),
                "kind": info.get_attr("IFLA_INFO_KIND") if info is not None else None,
            }

    return in_netns(ns_path(ns), op)


@contextlib.contextmanager
def api_client(socket_path: str, name: str = "test", read_timeout: float = 5) -> Iterator[Any]:
    """A ``VPPApiClient`` connected to ``socket_path``, disconnected afterwards."""
    client = VPPApiClient(
        apidir=str(default_api_dir()), server_address=socket_path, read_timeout=read_timeout
    )
    client.connect(name)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()

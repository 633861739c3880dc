"""Driver-level "nodes" for remote tests: each is a network namespace of an underlay pair
(:func:`tests.helpers.make_underlay`) whose KernelDriver runs in a thread that entered that
namespace, as a worker process of a forwarder running there would (the driver takes the calling
thread's namespace as the node's). The ``bed`` fixture (tests/drivers/conftest.py) makes them."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from nsm_forwarder.drivers.base import tag
from nsm_forwarder.drivers.kernel import wireguard
from nsm_forwarder.drivers.kernel.driver import KernelDriver
from tests.helpers import Underlay, netns_executor, sh


class Node:
    """A KernelDriver whose every call runs in one thread inside the node namespace;
    ``backend``: the ``wireguard_backend`` its ``init`` asks for."""

    def __init__(self, netns_name: str, ip: str, backend: str = "userspace") -> None:
        self.name, self.ip, self.backend = netns_name, ip, backend
        self.driver = KernelDriver()
        self.plans: list[dict[str, Any]] = []

        self.thread = netns_executor(netns_name)

    def call(self, method: str, *args: Any) -> Any:
        if method == "apply":
            self.plans.append(args[0])
        return self.thread.submit(getattr(self.driver, method), *args).result(60)

    def init(self, src_ip: str | None = None, backend: str | None = None) -> dict[str, Any]:
        config = {
            "src_ip": src_ip or self.ip,
            "vxlan_port": 4789,
            "wireguard_backend": backend or self.backend,
        }
        result: dict[str, Any] = self.call("init", config)
        return result

    def devices(self) -> list[str]:
        """WireGuard device names of every wireguard plan this node was asked to apply."""
        inode = os.stat(f"/var/run/netns/{self.name}").st_ino
        return [
            wireguard.device_name(inode, tag(p["id"], p["side"]))
            for p in self.plans
            if p.get("kind") == "wireguard"
        ]

    def node_links(self) -> list[str]:
        out = sh("ip", "-n", self.name, "-o", "link", "show")
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())

    def close(self) -> None:
        for device in self.devices():
            self.thread.submit(wireguard.stop, device).result(10)
        self.thread.submit(self.driver.sockets.close).result(10)
        self.thread.shutdown()


def no_daemons(*nodes: Node) -> bool:
    live = wireguard.running()
    return not [d for n in nodes for d in n.devices() if d in live]


def sockets_of(*nodes: Node) -> list[str]:
    """UAPI sockets or daemon logs left of these nodes' WireGuard devices."""
    paths = [
        f(d)
        for n in nodes
        for d in n.devices()
        for f in (wireguard.socket_path, wireguard.log_path)
    ]
    return [p for p in paths if os.path.exists(p)]


#: the ``bed`` fixture: ``bed(v6=False, backend="userspace", b_backend=None)``
Bed = Callable[..., tuple[Underlay, Node, Node]]

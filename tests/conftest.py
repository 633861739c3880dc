from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from nsm_forwarder.tools.registrar_server import RegistrarServer
from tests.helpers import (
    IS_ROOT,
    BackgroundLoop,
    Forwarder,
    Pods,
    new_workdir,
    start_registrar,
    unique,
    wait_until,
)

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces)")


@pytest.fixture
def pods() -> Iterator[Pods]:
    made = Pods()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(scope="module")
def module_pods() -> Iterator[Pods]:
    made = Pods()
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture(scope="module")
def bg_loop() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    try:
        yield loop
    finally:
        loop.close()


class Node:
    """A forwarder with its registrar stand-in; ``start()`` runs both."""

    def __init__(self, loop: BackgroundLoop, netns: str | None = None, **env: str) -> None:
        self.loop = loop
        self.workdir = new_workdir()
        self.forwarder = Forwarder(self.workdir, unique("fwd"), env, netns=netns)
        self._registrar: RegistrarServer | None = None

    @property
    def registrar(self) -> RegistrarServer:
        """The running registrar stand-in (nsmd) of this node."""
        assert self._registrar is not None, "the registrar stand-in is not running"
        return self._registrar

    def start_registrar(self, **kw: object) -> None:
        kw.setdefault("liveness_interval", 0.5)
        self._registrar = start_registrar(self.loop, self.forwarder.registrar_socket, **kw)

    def stop_registrar(self) -> None:
        if self._registrar is not None:
            self.loop.run(self._registrar.stop())
            self._registrar = None

    def wait_registered(self, timeout: float = 20) -> None:
        name = self.forwarder.name
        wait_until(
            lambda: self._registrar is not None and name in self._registrar.mechanisms,
            timeout,
            f"{name} registered",
        )

    def start(self) -> Node:
        self.start_registrar()
        self.forwarder.start()
        self.wait_registered()
        return self

    def close(self) -> None:
        self.forwarder.kill()
        self.stop_registrar()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def node_factory(bg_loop: BackgroundLoop) -> Iterator[type]:
    made: list[Node] = []

    def make(netns: str | None = None, **env: str) -> Node:
        node = Node(bg_loop, netns, **env)
        made.append(node)
        return node

    try:
        yield make  # type: ignore[misc]
    finally:
        for node in made:
            node.close()


@pytest.fixture(scope="module")
def node(bg_loop: BackgroundLoop) -> Iterator[Node]:
    """One running forwarder (2 workers) shared by a test module."""
    if not IS_ROOT:
        pytest.skip("needs root (network namespaces)")
    made = Node(bg_loop)
    try:
        made.start()
        yield made
    finally:
        made.close()

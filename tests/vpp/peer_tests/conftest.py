"""Fixtures of the protocol-level VPP's own tests: a fake on a fresh socket, a client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.vpp.peer import FakeVPP
from tests.vpp.peer.testing import IS_ROOT, api_client, running_fake, short_dir

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces)")
ROOT = Path(__file__).resolve().parents[3]  # the repository
NO_INDEX = 0xFFFFFFFF


@pytest.fixture
def workdir() -> Iterator[str]:
    with short_dir() as path:
        yield path


@pytest.fixture
def vpp(workdir: str) -> Iterator[FakeVPP]:
    with running_fake(workdir) as fake:
        yield fake


@pytest.fixture
def api(vpp: FakeVPP) -> Iterator[Any]:
    with api_client(vpp.api_socket) as client:
        yield client.api


def memif(api: Any, socket_id: int = 0, ident: int = 0, role: int = 0) -> int:
    r = api.memif_create_v2(role=role, socket_id=socket_id, id=ident)
    assert r.retval == 0, r
    return int(r.sw_if_index)


def names(api: Any) -> dict[int, str]:
    return {d.sw_if_index: d.interface_name for d in api.sw_interface_dump()}

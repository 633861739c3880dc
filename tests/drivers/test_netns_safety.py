"""Only nsfs namespaces are entered, found by inode: a regular file, a directory or a symlink
to one under /var/run/netns is never taken for a namespace, whatever inode a request names."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nsm_forwarder.drivers.errors import NotFound
from nsm_forwarder.drivers.linux import netns
from tests.helpers import IS_ROOT, unique

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root (/var/run/netns)")


@pytest.fixture
def strays() -> Iterator[dict[str, int]]:
    """A regular file, a directory and a symlink to a regular file in /var/run/netns (each
    named uniquely), by inode; removed afterwards."""
    os.makedirs(netns.NETNS_RUN_DIR, exist_ok=True)
    made: list[str] = []
    try:
        plain = os.path.join(netns.NETNS_RUN_DIR, unique("nsfstray"))
        with open(plain, "w") as f:
            f.write("not a namespace")
        made.append(plain)
        folder = os.path.join(netns.NETNS_RUN_DIR, unique("nsfsdir"))
        os.mkdir(folder)
        made.append(folder)
        link = os.path.join(netns.NETNS_RUN_DIR, unique("nsfslink"))
        os.symlink(plain, link)
        made.append(link)
        yield {
            "file": os.stat(plain).st_ino,
            "dir": os.stat(folder).st_ino,
            "link": os.stat(link).st_ino,
        }
    finally:
        for path in reversed(made):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)


def test_stray_files_are_not_namespaces(strays: dict[str, int]) -> None:
    found = netns.all_namespaces()
    for kind, inode in strays.items():
        assert inode not in found, kind
        assert not netns.reachable(inode), kind
        with pytest.raises(NotFound):
            netns.open_netns(inode)


def test_a_real_namespace_is_found_by_its_inode() -> None:
    inode = netns.current_netns_inode()
    fd = netns.open_netns(inode)
    try:
        assert os.fstat(fd).st_ino == inode
    finally:
        os.close(fd)

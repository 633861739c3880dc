"""Only nsfs namespaces are entered, found by inode: a regular file, a directory or a symlink
to one under /var/run/netns is never taken for a namespace, whatever inode a request names."""

from __future__ import annotations

import os
import subprocess
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


def test_reachable_follows_a_namespace_by_its_last_path_and_not_beyond() -> None:
    """reachable() checks the path a namespace was last found by first: true while that path
    still leads to it; false once that path names another namespace (and no other path leads
    to it: here only an fd holds it) or nothing."""
    first, second = unique("nsreach"), unique("nsreach")
    path = os.path.join(netns.NETNS_RUN_DIR, first)
    subprocess.run(["ip", "netns", "add", first], check=True)
    subprocess.run(["ip", "netns", "add", second], check=True)
    held = os.open(path, os.O_RDONLY)  # keeps the first namespace alive without a path
    try:
        a = os.fstat(held).st_ino
        b = os.stat(os.path.join(netns.NETNS_RUN_DIR, second)).st_ino
        assert netns.reachable(a) and netns.reachable(a)  # found, then by its remembered path
        subprocess.run(["ip", "netns", "del", first], check=True)  # unmounts and removes it
        open(path, "w").close()
        subprocess.run(
            ["mount", "--bind", os.path.join(netns.NETNS_RUN_DIR, second), path], check=True
        )
        assert os.stat(path).st_ino == b  # the remembered path now names the second one
        assert not netns.reachable(a)
        assert netns.reachable(b)
    finally:
        os.close(held)
        subprocess.run(["umount", path], check=False, capture_output=True)
        if os.path.exists(path):
            os.unlink(path)
        subprocess.run(["ip", "netns", "del", second], check=False, capture_output=True)

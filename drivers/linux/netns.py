"""Network namespaces by inode, and netlink sockets inside them without forking.

A pod's network namespace is named by its nsfs inode (what ``stat /proc/<pid>/ns/net`` reports).
:func:`open_netns` finds a path to it - a bind mount under ``/var/run/netns`` or a process's
``/proc/<pid>/ns/net`` - and returns an fd that pins the namespace while it is held.

:func:`iproute_in` gives a pyroute2 ``IPRoute`` whose netlink socket lives in another namespace.
pyroute2's own ``IPRoute(netns=...)`` forks a helper process; instead a short-lived thread enters
the namespace with ``setns()``, opens the socket and exits. A socket stays in the namespace it was
created in, and ``setns()`` only affects the calling thread, so neither the caller's thread nor
the process ever changes namespace. :func:`scratch_iproute` does the same in a new, empty
namespace (``unshare()`` in the helper thread), for probing the kernel where nobody sees it.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from nsm_forwarder.drivers.errors import DriverError, NotFound

#: Where ``ip netns add`` (and pyroute2's ``netns.create``) bind-mount named namespaces.
NETNS_RUN_DIR = "/var/run/netns"
PROC_DIR = "/proc"
CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0

_libc: ctypes.CDLL | None = None


def _libc_call(name: str, *args: int) -> None:
    """Call libc function ``name``; OSError with its errno when it returns non-zero."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


def _setns(fd: int, nstype: int) -> None:
    _libc_call("setns", fd, nstype)


def enter(fd: int) -> None:
    """Move the calling *thread* into network namespace fd ``fd`` (for a thread that is to do
    all its work there, e.g. a test's stand-in for a worker running in a node namespace)."""
    _setns(fd, CLONE_NEWNET)


@functools.cache
def _nsfs_dev() -> int:
    """st_dev shared by every namespace file (nsfs); tells them apart from stray regular files
    (the same for as long as the kernel runs: read once)."""
    return os.stat("/proc/self/ns/net").st_dev


def current_netns_inode() -> int:
    """Inode of the network namespace of the calling *thread*."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def _candidate_paths() -> Iterator[str]:
    """Paths that may name a network namespace: named ones first, then one per process."""
    try:
        with os.scandir(NETNS_RUN_DIR) as it:
            names = sorted(entry.name for entry in it)
    except OSError:
        names = []
    for name in names:
        yield os.path.join(NETNS_RUN_DIR, name)
    try:
        with os.scandir(PROC_DIR) as it:
            pids = sorted((entry.name for entry in it if entry.name.isdigit()), key=int)
    except OSError:
        pids = []
    for pid in pids:
        yield f"{PROC_DIR}/{pid}/ns/net"


def _inode_at(path: str) -> int | None:
    """The inode of the network namespace ``path`` leads to; None if it leads to none."""
    try:
        st = os.stat(path)
    except OSError:  # process gone, zombie, permission, stale mount point
        return None
    if st.st_dev != _nsfs_dev() or stat.S_ISDIR(st.st_mode):
        return None  # e.g. an empty file left by a failed `ip netns add`
    return st.st_ino


def _scan() -> Iterator[tuple[int, str]]:
    """(inode, path) of every network namespace path found (duplicates included)."""
    for path in _candidate_paths():
        inode = _inode_at(path)
        if inode is not None:
            yield inode, path


def all_namespaces() -> dict[int, str]:
    """Every reachable network namespace once: ``{inode: path}``.

    A namespace mounted under ``/var/run/netns`` is reported by that path (stable); others by a
    ``/proc/<pid>/ns/net`` path, valid only while that process lives. Namespaces held only by an
    fd or a thread of some process are not found.
    """
    found: dict[int, str] = {}
    for inode, path in _scan():
        found.setdefault(inode, path)
    return found


def _open_checked(path: str, inode: int, dev: int) -> int | None:
    """Open ``path`` O_RDONLY and return the fd if it still is namespace ``inode``, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if st.st_ino != inode or st.st_dev != dev:  # pid reused / mount replaced since the scan
        os.close(fd)
        return None
    return fd


def open_netns(inode: int) -> int:
    """An O_RDONLY fd of the network namespace with this inode; the caller closes it.

    Raises :class:`NotFound` if no such namespace is reachable (see :func:`all_namespaces`).
    """
    dev = _nsfs_dev()
    for found, path in _scan():
        if found != inode:
            continue
        fd = _open_checked(path, inode, dev)
        if fd is not None:
            return fd
    raise NotFound(f"no network namespace with inode {inode}")


#: inode -> the path it was last found by (checked first by :func:`reachable`)
_last_path: dict[int, str] = {}
_LAST_PATHS = 4096


def reachable(inode: int) -> bool:
    """True while some path (a bind mount, a process) still leads to namespace ``inode``.

    The path it was found by last time is checked first (one ``stat``: still nsfs, still that
    inode); only when that path no longer leads there are all paths scanned (a node's hundreds
    of namespaces and processes), so a worker's check before each reuse of a socket stays
    cheap however many pods the node runs."""
    path = _last_path.get(inode)
    if path is not None:
        if _inode_at(path) == inode:
            return True
        del _last_path[inode]
    for found, path in _scan():
        if found == inode:
            if len(_last_path) >= _LAST_PATHS:
                _last_path.clear()
            _last_path[inode] = path
            return True
    return False


def open_path(path: str, inode: int) -> int | None:
    """Open a path returned by :func:`all_namespaces`; None if it no longer is that namespace."""
    return _open_checked(path, inode, _nsfs_dev())


@contextmanager
def netns_fd(inode: int) -> Iterator[int]:
    """:func:`open_netns` as a context manager that closes the fd."""
    fd = open_netns(inode)
    try:
        yield fd
    finally:
        os.close(fd)


def _socket_from_thread(
    enter: Callable[[], None], proto: int, family: int = socket.AF_NETLINK
) -> socket.socket:
    """A SOCK_DGRAM socket (netlink by default, as pyroute2 wants) created by a helper thread
    after ``enter()`` moved that thread into some namespace; the calling thread stays where it
    is."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            enter()
            box["sock"] = socket.socket(family, socket.SOCK_DGRAM, proto)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="netns-socket", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    sock: socket.socket = box["sock"]
    return sock


def netlink_socket(netns: int, proto: int = NETLINK_ROUTE) -> socket.socket:
    """A netlink socket created inside namespace fd ``netns`` (by a helper thread)."""
    return _socket_from_thread(lambda: _setns(netns, CLONE_NEWNET), proto)


def inet_socket(netns: int) -> socket.socket:
    """An AF_INET datagram socket inside namespace fd ``netns``, for interface ioctls there."""
    return _socket_from_thread(lambda: _setns(netns, CLONE_NEWNET), 0, socket.AF_INET)


def _unshare_net() -> None:
    _libc_call("unshare", CLONE_NEWNET)


@contextmanager
def _iproute(make_socket: Callable[[], socket.socket], where: str) -> Iterator[Any]:
    from nsm_forwarder.drivers.linux.pyroute import iproute_class

    IPRoute = iproute_class()  # its import is slow (~0.3 s): paid only when netlink is used

    try:
        sock = make_socket()
    except OSError as exc:
        code = exc.errno or errno.EIO
        raise DriverError(f"netlink socket in {where}: {os.strerror(code)}") from exc
    fileno = sock.detach()
    try:
        ipr = IPRoute(fileno=fileno)
    except BaseException:
        try:
            os.close(fileno)
        except OSError:
            pass
        raise
    try:
        yield ipr
    finally:
        ipr.close()


def iproute_in(netns: int) -> AbstractContextManager[Any]:
    """A pyroute2 ``IPRoute`` bound to namespace fd ``netns``, closed on exit. No fork.

    Use the object only from the thread that entered the context: pyroute2 keeps its socket and
    event loop per thread, and another thread would silently get a second socket object on the
    same fd. Do not use it from a thread that runs an asyncio loop (sync pyroute2 would try to
    drive that loop). The namespace fd stays owned by the caller.
    """
    return _iproute(lambda: netlink_socket(netns), f"netns fd {netns}")


def scratch_iproute() -> AbstractContextManager[Any]:
    """An ``IPRoute`` in a new, empty network namespace that only its socket holds: whatever is
    made there disappears when the context closes. For probing what the kernel can do."""
    return _iproute(lambda: _socket_from_thread(_unshare_net, NETLINK_ROUTE), "a new netns")

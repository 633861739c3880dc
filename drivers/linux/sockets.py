"""Netlink sockets kept open per network namespace, for one driver's calls.

Opening a socket in another namespace takes a helper thread and a new pyroute2 ``IPRoute``
(about 2 ms together); a worker reuses them across calls instead. A socket pins its namespace
(the kernel keeps a namespace alive while a socket of it exists), so:

- before a cached socket is handed out, the namespace must still be reachable the way
  :func:`~nsm_forwarder.drivers.linux.netns.open_netns` finds one (a bind mount or a process):
  a pod that is gone is never written to through a socket that kept its namespace alive;
- sockets idle for :attr:`NetnsSockets.idle` seconds are closed at the next call, and at most
  :attr:`NetnsSockets.limit` are kept, so a deleted pod's namespace (and the veth ends in it) goes
  away soon after.

One instance belongs to one thread (pyroute2 sockets are per thread): a worker process runs its
driver's calls one at a time on its main thread.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any

from nsm_forwarder.drivers.errors import NotFound
from nsm_forwarder.drivers.linux import netns
from nsm_forwarder.drivers.linux.rtnl import Rtnl


class NetnsSockets:
    """``get(inode)`` -> (fd, IPRoute) of a pod's namespace, opened once and kept while in use;
    ``keep(fd)`` -> IPRoute of a namespace the caller pins for good (the node's)."""

    def __init__(self, idle: float = 2.0, limit: int = 64) -> None:
        self.idle = idle
        self.limit = limit
        #: inode -> (fd, IPRoute, its context manager, last use), least recently used first
        self._pods: OrderedDict[int, tuple[int, Any, Any, float]] = OrderedDict()
        #: node namespace fd -> (IPRoute, its context manager)
        self._kept: dict[int, tuple[Any, Any]] = {}
        #: inode of a pod in ``_pods`` -> its raw rtnetlink client (made on first use)
        self._raw: dict[int, Rtnl] = {}

    def get(self, inode: int) -> tuple[int, Any]:
        """The namespace's fd and socket; :class:`NotFound` if it is no longer reachable."""
        self._expire()
        entry = self._pods.get(inode)
        if entry is not None:
            if not netns.reachable(inode):
                self.drop(inode)
                raise NotFound(f"no network namespace with inode {inode}")
            fd, ipr, ctx, _ = entry
            self._pods[inode] = (fd, ipr, ctx, time.monotonic())
            self._pods.move_to_end(inode)
            return fd, ipr
        fd = netns.open_netns(inode)
        try:
            ctx = netns.iproute_in(fd)
            ipr = ctx.__enter__()
        except BaseException:
            os.close(fd)
            raise
        self._pods[inode] = (fd, ipr, ctx, time.monotonic())
        while len(self._pods) > self.limit:
            self.drop(next(iter(self._pods)))
        return fd, ipr

    def raw(self, inode: int) -> Rtnl:
        """The :class:`~nsm_forwarder.drivers.linux.rtnl.Rtnl` of a namespace just returned
        by :meth:`get` (a second socket there, for the hot path's own messages)."""
        client = self._raw.get(inode)
        if client is None:
            fd = self._pods[inode][0]
            client = self._raw[inode] = Rtnl(netns.netlink_socket(fd))
        return client

    def keep(self, fd: int) -> Any:
        """A socket in namespace fd ``fd``, which the caller holds open for as long as this
        object lives (the node's): never checked nor expired."""
        entry = self._kept.get(fd)
        if entry is None:
            ctx = netns.iproute_in(fd)
            entry = self._kept[fd] = (ctx.__enter__(), ctx)
        return entry[0]

    def drop(self, inode: int) -> None:
        """Close the socket of ``inode`` (after an error on it, or when it is gone)."""
        client = self._raw.pop(inode, None)
        if client is not None:
            client.close()
        entry = self._pods.pop(inode, None)
        if entry is not None:
            fd, _, ctx, _ = entry
            try:
                ctx.__exit__(None, None, None)
            finally:
                os.close(fd)

    def close(self) -> None:
        for inode in list(self._pods):
            self.drop(inode)
        for _, ctx in self._kept.values():
            ctx.__exit__(None, None, None)
        self._kept.clear()

    def _expire(self) -> None:
        now = time.monotonic()
        for inode, (_, _, _, used) in list(self._pods.items()):
            if now - used > self.idle:
                self.drop(inode)

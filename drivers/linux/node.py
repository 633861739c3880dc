"""The node network namespace: the one the worker process started in (the forwarder's own).

Remote tunnels keep their underlay (UDP sockets) there. It is pinned with an fd when first asked
for, which a driver's ``init`` does from the worker's main thread.
"""

from __future__ import annotations

import os


class NodeNetns:
    """An fd (and the inode) of the namespace of the thread that first asks for it."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def fd(self) -> int:
        if self._fd is None:
            self._fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        return self._fd

    def inode(self) -> int:
        return os.fstat(self.fd()).st_ino

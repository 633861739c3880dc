"""The Linux side of the fake: host interfaces in "VPP's" network namespace, tap devices, memif
listener sockets. Everything the fake creates is remembered so that it can be removed again.

Namespace names are resolved the way ``clib_netns_open`` (``src/vppinfra/linux/netns.c``) does:
``pid:N``, an absolute path, or a name under ``/var/run/netns``. A memif listener is bound the
way ``clib_socket_init`` (``src/vppinfra/socket.c``) binds a server socket: a stale socket file
is replaced, a live listener or a non-socket file is an error, and closing it later leaves the
file behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import stat
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2 import IPRoute

from tests.vpp.peer.wire import IPAddress, IPInterface

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ns_path(name: str) -> str:
    if name.startswith("pid:"):
        return f"/proc/{int(name[4:])}/ns/net"
    if name.startswith("/"):
        return name
    return f"/var/run/netns/{name}"


def in_netns(path: str | None, fn: Callable[[], T]) -> T:
    """``fn()`` in the network namespace at ``path`` (None: here).

    A short-lived thread does ``setns(CLONE_NEWNET)``, which moves only that thread, so no
    process is forked (pyroute2's own ``netns=`` forks, which is unsafe in processes that also
    run gRPC) and the rest of the process stays where it is.
    """
    if path is None:
        return fn()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="fake-vpp-netns", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


class LinuxError(Exception):
    """A netlink or socket call failed (the handler maps it to a retval)."""


class TunSetIffError(LinuxError):
    """Making the tun/tap device itself failed (VPP's TUNSETIFF ioctl)."""


def clear_stale(path: str) -> None:
    """Make room for a listener at ``path`` the way ``clib_socket_init`` does."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise LinuxError(f"File '{path}' already exists")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        active = True
    except OSError as exc:
        active = exc.errno != errno.ECONNREFUSED
    finally:
        probe.close()
    if active:
        raise LinuxError(f"Active listener on '{path}'")
    os.unlink(path)


class Host:
    """Netlink access to VPP's namespace (``netns``; None: the namespace the fake runs in)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        #: (namespace or None, device) of the taps the fake made
        self.taps: set[tuple[str | None, str]] = set()
        #: memif socket files the fake bound, and directories it made for them
        self.socket_files: set[str] = set()
        self.dirs: list[str] = []

    # -- netlink -----------------------------------------------------------------------------
    def _run(self, ns: str | None, op: Callable[[Any], T]) -> T:
        """``op(IPRoute)`` in namespace ``ns`` (None: VPP's namespace)."""
        target = ns if ns is not None else self.netns

        def with_ipr() -> T:
            ipr = IPRoute()
            try:
                return op(ipr)
            finally:
                ipr.close()

        return in_netns(None if target is None else ns_path(target), with_ipr)

    @staticmethod
    def ns_exists(ns: str) -> bool:
        return os.path.exists(ns_path(ns))

    def link(self, name: str, ns: str | None = None) -> dict[str, Any] | None:
        """{"index", "up", "kind"} of a link, or None."""

        def op(ipr: Any) -> dict[str, Any] | None:
            found = ipr.link_lookup(ifname=name)
            if not found:
                return None
            msg = ipr.get_links(found[0])[0]
            info = msg.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            return {"index": found[0], "up": bool(msg["flags"] & 1), "kind": kind}

        return self._run(ns, op)

    def _set(self, name: str, ns: str | None, **attrs: Any) -> bool:
        def op(ipr: Any) -> bool:
            found = ipr.link_lookup(ifname=name)
            if found:
                ipr.link("set", index=found[0], **attrs)
            return bool(found)

        try:
            return self._run(ns, op)
        except Exception:  # VPP logs the failure and carries on
            return False

    def set_up(self, name: str, up: bool, ns: str | None = None) -> bool:
        return self._set(name, ns, state="up" if up else "down")

    def set_mac(self, name: str, mac: str, ns: str | None = None) -> None:
        self._set(name, ns, address=mac)

    def free_name(self, prefix: str, ns: str | None) -> str:
        """The name the kernel gives an unnamed tun/tap: the lowest free ``<prefix>N``."""
        names = self._run(ns, lambda ipr: {m.get_attr("IFLA_IFNAME") for m in ipr.get_links()})
        n = 0
        while f"{prefix}{n}" in names:
            n += 1
        return f"{prefix}{n}"

    def create_tap(
        self,
        name: str,
        ns: str | None,
        *,
        tun: bool,
        mac: str | None,
        mtu: int | None,
        addresses: list[IPInterface],
        gateways: list[IPAddress],
        bridge: str | None,
    ) -> None:
        """Create and configure a tap/tun the way ``tap_create_if`` configures the host side."""

        def op(ipr: Any) -> None:
            try:
                ipr.link("add", ifname=name, kind="tuntap", mode="tun" if tun else "tap")
            except Exception as exc:
                raise TunSetIffError(str(exc)) from exc
            self.taps.add((ns, name))
            index = (ipr.link_lookup(ifname=name) or [0])[0]
            try:
                if mac is not None:
                    ipr.link("set", index=index, address=mac)
                if bridge is not None:
                    master = ipr.link_lookup(ifname=bridge)
                    if not master:
                        raise LinuxError(f"no bridge {bridge}")
                    ipr.link("set", index=index, master=master[0])
                for addr in addresses:
                    prefixlen = addr.network.prefixlen
                    ipr.addr("add", index=index, address=str(addr.ip), prefixlen=prefixlen)
                ipr.link("set", index=index, state="up")
                for gw in gateways:
                    dst = "0.0.0.0/0" if gw.version == 4 else "::/0"
                    ipr.route("add", dst=dst, gateway=str(gw))
                if mtu is not None:
                    ipr.link("set", index=index, mtu=mtu)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    ipr.link("del", index=index)
                self.taps.discard((ns, name))
                raise LinuxError(str(exc)) from exc

        self._run(ns, op)

    def delete_link(self, name: str, ns: str | None) -> None:
        self.taps.discard((ns, name))

        def op(ipr: Any) -> None:
            found = ipr.link_lookup(ifname=name)
            if found:
                ipr.link("del", index=found[0])

        with contextlib.suppress(Exception):
            self._run(ns, op)

    # -- memif listener sockets --------------------------------------------------------------
    def listen(self, filename: str) -> tuple[socket.socket, str | None]:
        """Bind a SOCK_SEQPACKET listener; (socket, file path or None for abstract)."""
        if filename.startswith("abstract:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                sock.bind("\0" + filename[len("abstract:") :])
                sock.listen(16)
            except OSError as exc:
                sock.close()
                raise LinuxError(str(exc)) from exc
            return sock, None
        path = filename[len("unix:") :] if filename.startswith("unix:") else filename
        clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind(path)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            raise LinuxError(str(exc)) from exc
        self.socket_files.add(path)
        return sock, path

    def make_dirs(self, path: str) -> None:
        """``vlib_unix_recursive_mkdir``, remembering what was made."""
        missing = []
        while path and not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        for made in reversed(missing):
            os.mkdir(made)
            self.dirs.append(made)

    def remove_socket_files(self) -> None:
        """Remove the socket files and then the (empty) directories the fake made."""
        for path in sorted(self.socket_files):
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
        self.socket_files.clear()
        for made in reversed(self.dirs):
            with contextlib.suppress(OSError):
                os.rmdir(made)
        self.dirs.clear()

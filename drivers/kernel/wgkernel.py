"""Kernel WireGuard devices: the ``wireguard`` module, configured over generic netlink.

Where the kernel has WireGuard (built in, loaded, or loadable: creating a ``wireguard`` link makes
the kernel load the module), a tunnel is a kernel device and needs no process. Life of one device,
named like a userspace one (:func:`~nsm_forwarder.drivers.kernel.wireguard.device_name`):

1. :func:`create`: ``RTM_NEWLINK`` kind ``wireguard`` on a node-namespace socket. The kernel opens
   the device's UDP socket in the namespace that created it (its "creating net") and keeps it
   there when the device moves: the underlay stays in the node namespace for good.
2. :func:`configure`: one ``WG_CMD_SET_DEVICE`` on a generic-netlink socket of the node namespace:
   private key, listen port and the one peer (the other node), allowed IPs all. The keys travel
   only inside the netlink attributes; neither they nor their hex form reach a log line, an error
   message or an argv.
3. The driver then gives it MTU and tag and moves it into the pod under the requested name, as
   for userspace devices. The listen port is bound when the device comes up in the pod (on the
   node's socket), so a port clash shows there (``EADDRINUSE``).
4. Deleting the device is all the cleanup there is.

:func:`unavailable` tells whether this kernel can make such devices, by creating one in a
throwaway network namespace (nothing is created where anyone can see it).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from nsm_forwarder.drivers.errors import DriverError
from nsm_forwarder.drivers.kernel.wireguard import ALLOWED_IPS, KEEPALIVE
from nsm_forwarder.drivers.linux import netns
from nsm_forwarder.drivers.linux.pyroute import NetlinkError, wireguard_class
from nsm_forwarder.drivers.shapes import WireguardTunnel, endpoint

KIND = "wireguard"
NETLINK_GENERIC = 16
_PROBE_NAME = "nsmwgprobe"


def unavailable() -> str | None:
    """Why the kernel cannot make WireGuard devices here, or None when it can.

    Creates a ``wireguard`` link in a new, empty network namespace that disappears with the
    probe's socket; the kernel loads the module on the way if it has one.
    """
    try:
        with netns.scratch_iproute() as ipr:
            ipr.link("add", ifname=_PROBE_NAME, kind=KIND)
    except NetlinkError as exc:
        if exc.code == errno.EOPNOTSUPP:
            return "the kernel has no WireGuard module"
        return f"creating a test {KIND} link failed: {os.strerror(exc.code or errno.EIO)}"
    except (OSError, DriverError) as exc:
        return f"cannot probe for kernel WireGuard: {exc}"
    return None


def create(ipr_node: Any, name: str) -> None:
    """Create device ``name`` in the namespace of ``ipr_node`` (the node's)."""
    ipr_node.link("add", ifname=name, kind=KIND)


def configure(node_fd: int, name: str, tunnel: WireguardTunnel, keepalive: int = KEEPALIVE) -> None:
    """Private key, listen port and exactly one peer (the other node), allowed IPs all, on the
    device ``name`` of namespace fd ``node_fd``. Errors name the device, port and peer only."""
    WireGuard = wireguard_class()

    peer = {
        "public_key": tunnel.peer_public_key,
        "endpoint_addr": str(tunnel.remote_ip),
        "endpoint_port": tunnel.remote_port,
        "persistent_keepalive": keepalive,
        "replace_allowed_ips": True,
        "allowed_ips": list(ALLOWED_IPS),
    }
    peer_at = endpoint(str(tunnel.remote_ip), tunnel.remote_port)
    where = f"configure WireGuard device {name} (listen port {tunnel.listen_port}, peer {peer_at})"
    try:
        sock = netns.netlink_socket(node_fd, NETLINK_GENERIC)
    except OSError as exc:
        raise DriverError(f"{where}: generic netlink socket: {exc.strerror}") from None
    wg = WireGuard(fileno=sock.detach())
    try:
        wg.set(name, private_key=tunnel.private_key, listen_port=tunnel.listen_port, peer=peer)
    except NetlinkError as exc:
        # never chained: nothing of the request (keys) may ride along in a traceback
        raise DriverError(f"{where}: {os.strerror(exc.code or errno.EIO)}") from None
    except ValueError:
        raise DriverError(f"{where}: a key is not 32 bytes of base64") from None
    finally:
        wg.close()

"""Checksum offload of one interface, through the SIOCETHTOOL ioctl on a socket of its namespace.

A veth whose other end is read by an AF_PACKET socket (VPP's af_packet) must not leave TX
checksums to "hardware": nobody would fill them in, and the receiver drops the packets.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

from nsm_forwarder.drivers.errors import DriverError

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17  # set TX checksum offload
ETHTOOL_SRXCSUM = 0x15  # set RX checksum offload
IFNAMSIZ = 16


def _set(sock_fd: int, ifname: str, cmd: int, value: int) -> None:
    data = ctypes.create_string_buffer(struct.pack("II", cmd, value))
    ifreq = struct.pack(f"{IFNAMSIZ}sP", ifname.encode(), ctypes.addressof(data))
    fcntl.ioctl(sock_fd, SIOCETHTOOL, ifreq)


def checksum_offload_off(sock_fd: int, ifname: str) -> None:
    """Turn TX and RX checksum offload off on ``ifname``, through ``sock_fd``: any socket of the
    interface's namespace (a netlink socket will do: the kernel hands an ioctl its family does
    not know to the device), so a caller that keeps one there opens nothing."""
    for cmd in (ETHTOOL_STXCSUM, ETHTOOL_SRXCSUM):
        try:
            _set(sock_fd, ifname, cmd, 0)
        except OSError as exc:
            raise DriverError(
                f"turn checksum offload off on {ifname}: {os.strerror(exc.errno or 0)}"
            ) from None

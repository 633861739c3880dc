"""Field-level checks of a cross-connect: each turns one value of the request into what a plan
holds, or raises InvalidRequest naming the field (never quoting a WireGuard key). Used by
:mod:`nsm_forwarder.drivers.plan`."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import posixpath
import re
from typing import Any

from nsm_forwarder.drivers.errors import InvalidRequest
from nsm_forwarder.drivers.shapes import MAC_RE, MAX_VNI, ifname_problem

#: A number in a mechanism parameter: ASCII digits only (no sign, space or other script), at
#: most 20 of them (2**64 has 20), so it is never turned into a huge int.
DECIMAL = re.compile(r"[0-9]{1,20}")
#: The largest inode number (ino_t is 64 bits).
MAX_INODE = 2**64 - 1
#: Longest cross-connect id, in UTF-8 bytes: the id is part of the tag each interface carries in
#: its alias, which the kernel caps at 255 bytes, together with the forwarder's name.
MAX_ID_BYTES = 128
#: sun_path of a unix socket holds this many bytes, the terminating NUL included.
UNIX_PATH_MAX = 108


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message: its repr, cut after ``limit`` characters."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def memif_socket(side: str, params: Any, base_dir: str) -> str:
    """``<base_dir>/<workspace>/<socketfile>`` (spec §6.3), which must stay inside the
    workspace and fit in a unix socket address."""
    where = f"{side}.mechanism.parameters"
    workspace = params.get("workspace", "")
    socketfile = params.get("socketfile", "")
    if not workspace or "/" in workspace or workspace in (".", "..") or "\0" in workspace:
        raise InvalidRequest(f"{where}.workspace: must be one directory name, got {workspace!r}")
    parts = socketfile.split("/")
    if (
        not socketfile
        or socketfile.startswith("/")
        or "\0" in socketfile
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InvalidRequest(
            f"{where}.socketfile: must be a relative path inside the workspace "
            f"(e.g. 'nsm0/memif.sock'), got {socketfile!r}"
        )
    path = posixpath.join(base_dir, workspace, socketfile)
    if len(path.encode()) >= UNIX_PATH_MAX:
        raise InvalidRequest(
            f"{where}.socketfile: the socket path {path!r} is longer than a unix socket "
            f"address allows ({UNIX_PATH_MAX - 1} bytes)"
        )
    return path


def check_ifname(field: str, name: str) -> None:
    """Raise InvalidRequest unless ``name`` is a valid Linux interface name (see
    :func:`~nsm_forwarder.drivers.shapes.ifname_problem`)."""
    if not name:
        raise InvalidRequest(f"{field}: must not be empty")
    problem = ifname_problem(name)
    if problem is not None:
        raise InvalidRequest(f"{field}: {shown(name)} is not a valid interface name: it {problem}")


def xcon_id(text: str) -> str:
    """The cross-connect id: it names the Store row and is part of every interface's tag."""
    if not text:
        raise InvalidRequest("id: must not be empty")
    size = len(text.encode())
    if size > MAX_ID_BYTES:
        raise InvalidRequest(f"id: is {size} bytes, the limit is {MAX_ID_BYTES}")
    if not text.isprintable():
        raise InvalidRequest(
            f"id: {shown(text)} contains control or other non-printable characters"
        )
    return text


def decimal(field: str, text: str, low: int, high: int, what: str) -> int:
    """A decimal number in ``low..high`` (``what`` says what it is, for the message)."""
    if not DECIMAL.fullmatch(text) or not low <= int(text) <= high:
        raise InvalidRequest(
            f"{field}: must be a decimal {what} in {low}..{high}, got {shown(text)}"
        )
    return int(text)


def netns_inode(field: str, text: str) -> int:
    """The ``netnsInode`` parameter: a pod's namespace, by inode (never a path)."""
    return decimal(field, text, 1, MAX_INODE, "inode number")


def underlay_ip(field: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not text:
        raise InvalidRequest(f"{field}: must be set (tunnel underlay IP address)")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidRequest(f"{field}: {text!r} is not an IP address") from None
    if ip.is_unspecified or ip.is_multicast:
        raise InvalidRequest(f"{field}: {text!r} is not a unicast address")
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise InvalidRequest(f"{field}: {text!r}: scoped addresses are not supported")
    return ip


def vni(field: str, text: str) -> int:
    return decimal(field, text, 1, MAX_VNI, "VNI")


def port(field: str, text: str) -> int:
    return decimal(field, text, 1, 65535, "UDP port")


def wg_key(field: str, text: str) -> str:
    """A WireGuard key in canonical base64; the message never quotes the value."""
    if not text:
        raise InvalidRequest(f"{field}: must be set (a base64 WireGuard key)")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field}: is not valid base64 (value not shown)") from None
    if len(raw) != 32:
        raise InvalidRequest(
            f"{field}: must be a 32-byte WireGuard key, got {len(raw)} bytes (value not shown)"
        )
    return base64.b64encode(raw).decode()


def host(cidr: str) -> str:
    return cidr.split("/")[0] if cidr else ""


def cidr(field: str, text: str) -> str:
    if not text:
        return ""
    if "/" not in text:
        raise InvalidRequest(f"{field}: {text!r} must be in addr/len form")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidRequest(f"{field}: {text!r} is not a valid addr/len") from None
    return f"{iface.ip}/{iface.network.prefixlen}"


def routes(field: str, routes: Any, local: str, gateway: str) -> list[dict[str, str]]:
    """Routes via the peer's address when it is on the local subnet, else on-link routes."""
    if gateway and not (
        local and ipaddress.ip_address(gateway) in ipaddress.ip_interface(local).network
    ):
        gateway = ""
    out = []
    for i, route in enumerate(routes):
        name = f"ip_context.{field}[{i}].prefix"
        if not route.prefix:
            raise InvalidRequest(f"{name}: must not be empty")
        try:
            net = ipaddress.ip_network(route.prefix, strict=False)
        except ValueError:
            raise InvalidRequest(f"{name}: {route.prefix!r} is not a valid CIDR") from None
        gw = gateway if gateway and ipaddress.ip_address(gateway).version == net.version else ""
        out.append({"prefix": str(net), "gateway": gw})
    return out


def neighbors(neighbors: Any) -> list[dict[str, str]]:
    out = []
    for i, n in enumerate(neighbors):
        name = f"ip_context.ip_neighbors[{i}]"
        try:
            ip = str(ipaddress.ip_address(n.ip))
        except ValueError:
            raise InvalidRequest(f"{name}.ip: {n.ip!r} is not an IP address") from None
        if not MAC_RE.match(n.hardware_address):
            raise InvalidRequest(
                f"{name}.hardware_address: {n.hardware_address!r} is not a MAC address"
            )
        out.append({"ip": ip, "mac": n.hardware_address.lower()})
    return out

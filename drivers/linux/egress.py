"""Egress detection: the interface that carries ``NSM_FORWARDER_SRC_IP`` in the node namespace.

Unlike upstream (spec §4.3, §8.1 item 22) this looks only at the interface addresses, IPv4 or
IPv6, and needs neither a default route nor ``/proc/net/arp``. The forwarder refuses to start
when no interface carries the address: remote tunnels would be built with a local address this
node does not have.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import asdict, dataclass
from typing import Any

from nsm_forwarder.drivers.errors import ForwarderError

IFF_LOOPBACK = 0x8


@dataclass(frozen=True)
class Egress:
    ifname: str
    ifindex: int
    mtu: int
    ip: str
    loopback: bool = False

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


class EgressNotFound(ForwarderError):
    """No interface of the node namespace carries the configured source IP."""

    code = "FAILED_PRECONDITION"


def _local_address(msg: Any) -> str | None:
    # IFA_LOCAL is this end of a point-to-point address; IFA_ADDRESS then is the peer
    value = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return str(value) if value else None


def find_egress(ipr: Any, src_ip: str) -> Egress:
    """The interface of ``ipr``'s namespace that has ``src_ip`` as one of its addresses.

    Raises :class:`EgressNotFound` (one clear line) when there is none.
    """
    if not src_ip:
        raise EgressNotFound("NSM_FORWARDER_SRC_IP is not set")
    try:
        want = ipaddress.ip_address(src_ip)
    except ValueError:
        raise EgressNotFound(f"NSM_FORWARDER_SRC_IP {src_ip!r} is not an IP address") from None
    fam = socket.AF_INET if want.version == 4 else socket.AF_INET6
    index = None
    for msg in ipr.addr("dump", family=fam):
        text = _local_address(msg)
        if text is None:
            continue
        try:
            found = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            continue
        if found == want:
            index = int(msg["index"])
            break
    if index is None:
        raise EgressNotFound(f"no interface carries NSM_FORWARDER_SRC_IP {want}")
    link = ipr.link("get", index=index)[0]
    return Egress(
        ifname=str(link.get_attr("IFLA_IFNAME")),
        ifindex=index,
        mtu=int(link.get_attr("IFLA_MTU") or 0),
        ip=str(want),
        loopback=bool(int(link["flags"]) & IFF_LOOPBACK),
    )

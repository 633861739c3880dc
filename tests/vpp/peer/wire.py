"""Decoding of the raw (unconverted) VPP API types a handler receives.

Requests are unpacked without vpp_papi's conversions, so ``vl_api_address_t`` arrives as
``{"af": .., "un": {"ip4": bytes, "ip6": bytes}}`` and a MAC as 6 bytes -- the way VPP's
``ip_address_decode`` / ``mac_address_decode`` see them.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NO_INDEX = 0xFFFFFFFF  # ~0
ADDRESS_IP6 = 1


def address(raw: dict[str, Any]) -> IPAddress:
    """``vl_api_address_t``: af 1 is IPv6, anything else is read as IPv4 (as VPP does)."""
    if int(raw["af"]) == ADDRESS_IP6:
        return ipaddress.IPv6Address(bytes(raw["un"]["ip6"]))
    return ipaddress.IPv4Address(bytes(raw["un"]["ip4"]))


def prefix(raw: dict[str, Any]) -> tuple[IPAddress, int]:
    """``vl_api_prefix_t`` / ``vl_api_address_with_prefix_t``: (address, length), unchecked."""
    return address(raw["address"]), int(raw["len"])


def network(addr: IPAddress, length: int) -> IPNetwork:
    """The network of a prefix whose length is valid; host bits are masked, as FIB does."""
    return ipaddress.ip_network((addr, length), strict=False)


def interface(addr: IPAddress, length: int) -> IPInterface:
    return ipaddress.ip_interface((addr, length))


def max_len(addr: IPAddress) -> int:
    return 32 if addr.version == 4 else 128


def mac(raw: bytes | list[int]) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def is_zero_mac(text: str | None) -> bool:
    return text is None or text == "00:00:00:00:00:00"


def random_mac() -> str:
    """``ethernet_mac_address_generate``: 02:fe followed by four random bytes."""
    return mac(b"\x02\xfe" + os.urandom(4))

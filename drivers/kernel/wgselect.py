"""Which WireGuard the kernel driver builds tunnels with: the kernel module or ``wireguard-go``.

Setting ``wireguard_backend``: ``auto`` (default) takes the kernel module when the kernel has one
and userspace ``wireguard-go`` otherwise, and offers no WIREGUARD when neither works; ``kernel``
or ``userspace`` insist on one and refuse to start (one clear line) when it cannot work.
"""

from __future__ import annotations

from dataclasses import dataclass

from nsm_forwarder.drivers.errors import DriverError
from nsm_forwarder.drivers.kernel import wgkernel, wireguard

AUTO, KERNEL, USERSPACE = "auto", "kernel", "userspace"
BACKENDS = (AUTO, KERNEL, USERSPACE)


@dataclass(frozen=True)
class Choice:
    """``backend``: KERNEL, USERSPACE or None (no WIREGUARD here); ``why``: for the log."""

    backend: str | None
    why: str


def choose(wanted: str = AUTO) -> Choice:
    """The backend to use for ``wanted``; DriverError when an insisted-on one cannot work."""
    if wanted not in BACKENDS:
        raise DriverError(f"wireguard_backend must be one of {', '.join(BACKENDS)}, not {wanted!r}")
    no_kernel = wgkernel.unavailable() if wanted in (AUTO, KERNEL) else "not wanted"
    if no_kernel is None:
        return Choice(KERNEL, "the kernel's WireGuard module")
    if wanted == KERNEL:
        raise DriverError(f"wireguard_backend is kernel, but {no_kernel}")
    no_userspace = wireguard.unavailable()
    if no_userspace is None:
        why = f"userspace {wireguard.BINARY}"
        return Choice(USERSPACE, why if wanted == USERSPACE else f"{why} ({no_kernel})")
    if wanted == USERSPACE:
        raise DriverError(f"wireguard_backend is userspace, but {no_userspace}")
    return Choice(None, f"{no_kernel}, and {no_userspace}")

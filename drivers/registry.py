"""The mechanism table: which drivers exist, what each one advertises, how to load it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from nsm_forwarder.drivers.base import Driver


@dataclass(frozen=True)
class DriverInfo:
    """One driver: where its class lives and which mechanism types it can build (its ``init``
    may offer fewer, e.g. no WIREGUARD where wireguard-go cannot run)."""

    name: str
    target: str  # "module:Class"
    local_mechanisms: tuple[str, ...]
    remote_mechanisms: tuple[str, ...]


DRIVERS: dict[str, DriverInfo] = {
    "kernel": DriverInfo(
        name="kernel",
        target="nsm_forwarder.drivers.kernel.driver:KernelDriver",
        local_mechanisms=("KERNEL_INTERFACE",),
        remote_mechanisms=("VXLAN", "WIREGUARD"),
    ),
}


def driver_info(name: str) -> DriverInfo:
    try:
        return DRIVERS[name]
    except KeyError:
        raise ValueError(f"unknown driver {name!r} (known: {', '.join(DRIVERS)})") from None


def load_driver(name: str) -> Driver:
    """Import and instantiate the named driver (call this in a worker process)."""
    module, _, cls = driver_info(name).target.partition(":")
    driver: Driver = getattr(importlib.import_module(module), cls)()
    return driver

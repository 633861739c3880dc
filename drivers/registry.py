"""Which drivers exist and how to load one (by name, inside a worker process).

The main process never imports a driver module (they pull in pyroute2 or vpp_papi); each driver
class says itself which mechanism types it can build, and its ``init`` reports what it offers.
"""

from __future__ import annotations

import importlib

from nsm_forwarder.drivers.base import Driver

#: driver name -> "module:Class"
DRIVERS: dict[str, str] = {
    "kernel": "nsm_forwarder.drivers.kernel.driver:KernelDriver",
    "vpp": "nsm_forwarder.drivers.vpp.driver:VppDriver",
}


def load_driver(name: str) -> Driver:
    """Import and instantiate the named driver (call this in a worker process)."""
    try:
        target = DRIVERS[name]
    except KeyError:
        raise ValueError(f"unknown driver {name!r} (known: {', '.join(DRIVERS)})") from None
    module, _, cls = target.partition(":")
    driver: Driver = getattr(importlib.import_module(module), cls)()
    return driver

"""The parts of pyroute2 the drivers use, imported without pyroute2's package ``__init__``.

Accepts:  imports of :data:`NetlinkError` (at once) and of ``IPRoute`` / ``WireGuard`` by
          :func:`iproute_class` / :func:`wireguard_class` (on first call).
Guarantees: ``pyroute2``'s ``__init__`` imports every family it has (NDB with sqlite, IPDB,
          nftables, nl80211, ipset, devlink, plan9, ...), about 60 modules and 5 MiB per
          process more than the forwarder uses. Importing this module first puts the
          ``pyroute2`` package in ``sys.modules`` unexecuted: its submodules import as usual,
          and the package's ``__init__`` still runs, in full, the first time anyone asks the
          package for a name only it defines (``from pyroute2 import NDB``), so other code that
          uses the whole package keeps working. If ``pyroute2`` was imported before, this
          changes nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from typing import Any

__all__ = ["NetlinkError", "iproute_class", "preload", "wireguard_class"]

#: dunder names the full package defines (asking for them runs its ``__init__``)
_PACKAGE_DUNDERS = ("__all__", "__version__")


def _lean_package() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed as a package: let the real import say so
    package = importlib.util.module_from_spec(spec)
    lock = threading.RLock()
    state = {"executed": False}

    def __getattr__(name: str) -> Any:  # PEP 562: only names the module does not have
        if name.startswith("__") and name not in _PACKAGE_DUNDERS:
            raise AttributeError(name)
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            raise AttributeError(name)  # a submodule: the import system loads it
        with lock:
            if state["executed"]:
                raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")
            state["executed"] = True
            assert spec.loader is not None
            spec.loader.exec_module(package)  # what ``import pyroute2`` would have run
        return getattr(package, name)

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["pyroute2"] = package


_lean_package()

from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402


def iproute_class() -> type[Any]:
    """pyroute2's ``IPRoute`` (its import takes ~0.3 s: only paid where netlink is used)."""
    from pyroute2.iproute import IPRoute

    return IPRoute  # type: ignore[no-any-return]


def wireguard_class() -> type[Any]:
    """pyroute2's ``WireGuard`` (generic netlink)."""
    from pyroute2.netlink.generic.wireguard import WireGuard

    return WireGuard  # type: ignore[no-any-return]


def preload() -> None:
    """Import everything above now (a worker's zygote does, so its workers share it)."""
    iproute_class()
    wireguard_class()

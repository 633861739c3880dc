"""pyroute2 without its package ``__init__``: the drivers' imports stay lean, and code that asks
the package for one of its names still gets the whole package. Each check runs in a fresh
interpreter (pytest's own may have imported pyroute2 in full already)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_pyroute_imports_only_what_the_drivers_use() -> None:
    run(
        """
        import sys
        from nsm_forwarder.drivers.linux import pyroute
        assert "pyroute2.netlink.exceptions" in sys.modules
        assert "pyroute2.iproute" not in sys.modules  # on first use only
        ipr = pyroute.iproute_class()
        assert ipr.__module__.startswith("pyroute2.iproute")
        assert pyroute.wireguard_class().__name__ == "WireGuard"
        for name in ("pyroute2.ndb.main", "pyroute2.ipdb", "pyroute2.nftables", "sqlite3"):
            assert name not in sys.modules, name
        from pyroute2 import config  # a submodule: still no package __init__
        assert "pyroute2.ndb.main" not in sys.modules
        """
    )


def test_pyroute_asking_the_package_for_a_name_imports_it_whole() -> None:
    run(
        """
        import sys
        from nsm_forwarder.drivers.linux import pyroute
        import pyroute2
        from pyroute2 import NDB, IPRoute
        assert "pyroute2.ndb.main" in sys.modules
        assert IPRoute is pyroute.iproute_class() and pyroute2.NetlinkError is pyroute.NetlinkError
        assert pyroute2.__version__
        try:
            pyroute2.no_such_name
        except AttributeError:
            pass
        else:
            raise AssertionError("a missing name must stay missing")
        """
    )


def test_pyroute_after_a_full_import_changes_nothing() -> None:
    run(
        """
        import pyroute2
        full = pyroute2.IPRoute
        from nsm_forwarder.drivers.linux import pyroute
        assert pyroute.iproute_class() is full
        """
    )


def test_pyroute_no_driver_imports_the_whole_package() -> None:
    """Importing either driver (as a worker does) leaves pyroute2's families out: a driver
    module importing from pyroute2 before drivers.linux.pyroute would run its __init__."""
    for module in ("nsm_forwarder.drivers.kernel.driver", "nsm_forwarder.drivers.vpp.driver"):
        run(
            f"""
            import sys
            import {module}
            for name in ("pyroute2.ndb.main", "pyroute2.ipdb", "pyroute2.nftables"):
                assert name not in sys.modules, name
            """
        )

"""A protocol-level VPP for tests: VPP's API socket framing and message set (from the real
``.api.json`` files), an object table with VPP's semantics, a stats segment, fault switches.

    from tests.vpp.peer import FakeVPP
    vpp = FakeVPP(api_socket=".../api.sock", stats_socket=".../stats.sock").start()
"""

from tests.vpp.peer.errors import Retval, retval_name
from tests.vpp.peer.fake import FakeVPP
from tests.vpp.peer.model import Interface, MemifSocket, Neighbor, Route

__all__ = ["FakeVPP", "Interface", "MemifSocket", "Neighbor", "Retval", "Route", "retval_name"]

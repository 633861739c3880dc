"""Cross-connects with MEMIF ends, shaped like nsmd's (spec §3.3): the client's mechanism
carries its workspace, the endpoint's the NSE's workspace; ``socketfile`` is
``<name>/memif.sock``."""

from __future__ import annotations

from nsm_forwarder.proto import connection_pb2, connectioncontext_pb2, crossconnect_pb2
from tests.helpers import Pod

CLIENT_WS, NSE_WS = "client-ws", "nse-ws"


def memif_xcon(
    xcon_id: str,
    src: Pod,
    dst: Pod,
    src_type: str,
    dst_type: str,
    src_ip: str = "10.31.1.1/30",
    dst_ip: str = "10.31.1.2/30",
) -> crossconnect_pb2.CrossConnect:
    """A local cross-connect whose ends are of ``src_type`` / ``dst_type`` (KERNEL_INTERFACE or
    MEMIF): the client's end is ``nsm0`` in workspace client-ws, the endpoint's ``nse0`` in
    nse-ws."""
    ctx = connectioncontext_pb2.ConnectionContext(
        ip_context=connectioncontext_pb2.IPContext(src_ip_addr=src_ip, dst_ip_addr=dst_ip)
    )

    def conn(
        side: str, kind: str, pod: Pod, name: str, workspace: str
    ) -> connection_pb2.Connection:
        params = {"name": name, "netnsInode": str(pod.inode), "workspace": workspace}
        if kind == "MEMIF":
            params["socketfile"] = f"{name}/memif.sock"
        return connection_pb2.Connection(
            id=f"{xcon_id}-{side}",
            network_service="svc",
            mechanism=connection_pb2.Mechanism(type=kind, parameters=params),
            context=ctx,
        )

    return crossconnect_pb2.CrossConnect(
        id=xcon_id,
        payload="ETHERNET",
        source=conn("src", src_type, src, "nsm0", CLIENT_WS),
        destination=conn("dst", dst_type, dst, "nse0", NSE_WS),
    )

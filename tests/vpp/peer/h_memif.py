"""memif socket files and memif interfaces.

Sources (VPP v26.06): ``src/plugins/memif/memif_api.c`` and ``memif.c``:

* socket ids: 0 is the default socket (``<runtime dir>/memif.sock``, made at init) and can be
  neither added nor deleted through the v2 call; ``~0`` with ``is_add`` allocates a random unused
  id (``memif_get_unused_socket_id``); re-adding the same id and file is accepted silently, a
  different file -> ENTRY_ALREADY_EXISTS; deleting an unknown id -> INVALID_ARGUMENT, one that
  interfaces use -> UNEXPECTED_INTF_STATE. A relative file name lives under the runtime dir.
* ``memif_create_if``: unknown socket id -> INVALID_ARGUMENT; masters and slaves cannot share a
  socket file, nor two interfaces one id -> SUBIF_ALREADY_EXISTS; ring size must be a power of
  two -> INVALID_ARGUMENT; name ``memif<socket_id>/<id>`` (``device.c``). The first master on a
  socket file starts a SOCK_SEQPACKET listener there (failure -> SYSCALL_ERROR_4); deleting the
  last interface closes it and leaves the file.
* details report ring_size ``1 << run.log2_ring_size`` and ``run.buffer_size``, values set only
  when a peer connects: a never-connected memif shows 1 and 0, and its link stays down.
"""

from __future__ import annotations

import os
import random
from typing import Any

from tests.vpp.peer.errors import Retval
from tests.vpp.peer.handlers import Ctx, Out, handles, reply, valid
from tests.vpp.peer.linux import LinuxError
from tests.vpp.peer.model import MemifInfo, MemifSocket
from tests.vpp.peer.wire import NO_INDEX, is_zero_mac, mac, random_mac

MEMIF_ROLE_API_MASTER = 0
MEMIF_MODE_API_ETHERNET = 0
MEMIF_MODE_API_IP = 1
DEFAULT_RING_SIZE = 1024
DEFAULT_BUFFER_SIZE = 2048
SOCKET_PREFIXES = ("unix:", "tcp:", "abstract:")  # clib_socket_prefix_is_valid


def _unused_socket_id(ctx: Ctx) -> int:
    while True:
        candidate = random.getrandbits(32)
        if candidate != NO_INDEX and candidate not in ctx.model.memif_sockets:
            return candidate


def socket_add_del(ctx: Ctx, is_add: bool, socket_id: int, filename: str) -> int:
    """``memif_socket_filename_add_del``."""
    sockets = ctx.model.memif_sockets
    if socket_id == 0 and not is_add:
        return Retval.INVALID_ARGUMENT  # "cannot delete socket id 0"
    if socket_id == NO_INDEX:
        return Retval.INVALID_ARGUMENT
    if not is_add:
        found = sockets.get(socket_id)
        if found is None:
            return Retval.INVALID_ARGUMENT
        if found.ref_cnt > 0:
            return Retval.UNEXPECTED_INTF_STATE
        del sockets[socket_id]
        return 0
    if not filename:
        return Retval.INVALID_ARGUMENT
    if filename.startswith(SOCKET_PREFIXES) or filename.startswith("/"):
        name = filename
    else:
        name = f"{ctx.model.runtime_dir}/{filename}"
        try:
            ctx.host.make_dirs(os.path.dirname(name))
        except OSError:
            return Retval.SYSCALL_ERROR_1  # "unable to create socket dir"
    existing = sockets.get(socket_id)
    if existing is not None:
        return 0 if existing.filename == name else Retval.ENTRY_ALREADY_EXISTS
    sockets[socket_id] = MemifSocket(socket_id, name)
    return 0


@handles("memif_socket_filename_add_del_v2")
def socket_add_del_v2(ctx: Ctx, m: dict[str, Any]) -> Out:
    name = "memif_socket_filename_add_del_v2_reply"
    socket_id = int(m["socket_id"])
    if socket_id == 0:
        return reply(name, Retval.INVALID_ARGUMENT, socket_id=0)
    if m["is_add"] and socket_id == NO_INDEX:
        socket_id = _unused_socket_id(ctx)
    rv = socket_add_del(ctx, bool(m["is_add"]), socket_id, str(m["socket_filename"]))
    return reply(name, rv, socket_id=socket_id)


@handles("memif_socket_filename_add_del")
def socket_add_del_v1(ctx: Ctx, m: dict[str, Any]) -> Out:
    name = "memif_socket_filename_add_del_reply"
    socket_id = int(m["socket_id"])
    if socket_id in (0, NO_INDEX):
        return reply(name, Retval.INVALID_ARGUMENT)
    return reply(name, socket_add_del(ctx, bool(m["is_add"]), socket_id, str(m["socket_filename"])))


def _create(ctx: Ctx, m: dict[str, Any]) -> tuple[int, int]:
    """(retval, sw_if_index) of the memif_create handlers and ``memif_create_if``."""
    is_master = int(m["role"]) == MEMIF_ROLE_API_MASTER
    ring_size = int(m["ring_size"]) or DEFAULT_RING_SIZE
    if ring_size & (ring_size - 1):
        return Retval.INVALID_ARGUMENT, 0
    sock = ctx.model.memif_sockets.get(int(m["socket_id"]))
    if sock is None:
        return Retval.INVALID_ARGUMENT, 0
    ident = int(m["id"])
    if sock.ref_cnt > 0 and (sock.is_listener != is_master or ident in sock.ids):
        return Retval.SUBIF_ALREADY_EXISTS, 0
    mode = int(m["mode"])
    if mode not in (MEMIF_MODE_API_ETHERNET, MEMIF_MODE_API_IP):
        return Retval.SYSCALL_ERROR_2, 0  # "unsupported interface mode"
    if sock.ref_cnt == 0:
        sock.is_listener = is_master
    ethernet = mode == MEMIF_MODE_API_ETHERNET
    requested = mac(m["hw_addr"])
    info = MemifInfo(
        socket_id=sock.socket_id,
        id=ident,
        role="master" if is_master else "slave",
        mode="ethernet" if ethernet else "ip",
        zero_copy=not is_master and not m["no_zero_copy"],
        secret=str(m["secret"]),
        rx_queues=int(m["rx_queues"]) or (0 if is_master else 1),
        tx_queues=int(m["tx_queues"]) or (0 if is_master else 1),
        ring_size=ring_size,
        buffer_size=int(m["buffer_size"]) or DEFAULT_BUFFER_SIZE,
        dev_instance=ctx.model.memif_pool.get(),
    )
    iface = ctx.model.add_interface(
        name=f"memif{sock.socket_id}/{ident}",
        dev_type="memif",
        kind="memif",
        ethernet=ethernet,
        mac=(random_mac() if is_zero_mac(requested) else requested) if ethernet else None,
        memif=info,
    )
    if sock.is_listener and sock.ref_cnt == 0:
        try:
            sock.listener, sock.path = ctx.host.listen(sock.filename)
        except LinuxError:
            ctx.model.delete_interface(iface.sw_if_index)
            ctx.model.memif_pool.put(info.dev_instance)
            return Retval.SYSCALL_ERROR_4, iface.sw_if_index
    sock.ref_cnt += 1
    sock.ids.add(ident)
    return 0, iface.sw_if_index


@handles("memif_create_v2", "memif_create")
def create(ctx: Ctx, m: dict[str, Any]) -> Out:
    name = "memif_create_v2_reply" if "use_dma" in m else "memif_create_reply"
    rv, index = _create(ctx, m)
    return reply(name, rv, sw_if_index=index)


@handles("memif_delete")
def delete(ctx: Ctx, m: dict[str, Any]) -> Out:
    iface = valid(ctx, m["sw_if_index"])
    if iface is None or iface.memif is None:
        return reply("memif_delete_reply", Retval.INVALID_SW_IF_INDEX)
    info = iface.memif
    ctx.model.delete_interface(iface.sw_if_index)
    ctx.model.memif_pool.put(info.dev_instance)
    sock = ctx.model.memif_sockets[info.socket_id]
    sock.ids.discard(info.id)
    sock.ref_cnt -= 1
    if sock.ref_cnt == 0 and sock.listener is not None:
        sock.listener.close()  # clib_socket_close: the file stays
        sock.listener = None
    return reply("memif_delete_reply")


@handles("memif_dump")
def dump(ctx: Ctx, m: dict[str, Any]) -> Out:
    found = [i for i in ctx.model.ifs.values() if i.memif is not None]
    out: Out = []
    for iface in sorted(found, key=lambda i: i.memif.dev_instance if i.memif else 0):
        info = iface.memif
        assert info is not None
        fields = {
            "sw_if_index": iface.sw_if_index,
            "hw_addr": iface.mac or "00:00:00:00:00:00",
            "id": info.id,
            "role": 0 if info.role == "master" else 1,
            "mode": 0 if info.mode == "ethernet" else 1,
            "zero_copy": info.zero_copy,
            "socket_id": info.socket_id,
            "ring_size": 1,  # 1 << run.log2_ring_size, never connected
            "buffer_size": 0,
            "flags": (1 if iface.admin_up else 0) | (2 if iface.link_up else 0),
            "if_name": iface.name,
        }
        out.append(("memif_details", fields))
    return out


@handles("memif_socket_filename_dump")
def socket_dump(ctx: Ctx, m: dict[str, Any]) -> Out:
    return [
        ("memif_socket_filename_details", {"socket_id": s.socket_id, "socket_filename": s.filename})
        for _, s in sorted(ctx.model.memif_sockets.items())
    ]

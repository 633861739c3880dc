"""The driver contract: what a data-plane driver does, in plain msgpack-able dicts.

A driver runs inside a worker process (never in the gRPC process). The parent sends it *plans*
built by :mod:`nsm_forwarder.drivers.plan` and keeps the *applied* records it returns, so a later
``remove`` needs nothing but that record.

Plan of a local cross-connect (``kind == "local"``)::

    {"id": str, "kind": "local", "mtu": int,
     "src": End, "dst": End}
    End = {"inode": int,            # netns inode of the pod
           "name": str,             # interface name wanted in the pod (<= 15 bytes)
           "addr": str,             # "addr/len" or "" (no address)
           "routes": [{"prefix": "net/len", "gateway": "ip" or ""}],
           "neighbors": [{"ip": str, "mac": str}]}

Applied record::

    {"id": str, "kind": "local",
     "src": {"inode": int, "name": str, "ifindex": int},
     "dst": {"inode": int, "name": str, "ifindex": int}}

Remote plans (``kind`` ``"vxlan"`` / ``"wireguard"``: one local pod end plus the tunnel) are
described where they are built, in :func:`nsm_forwarder.drivers.plan.plan_from_xcon`, and their
applied records in :mod:`nsm_forwarder.drivers.kernel.remote`.

Every interface a driver creates is tagged with the alias ``nsm:<forwarder>/<id>:<side>`` (see
:func:`tag`) and the interface group :data:`TAG_GROUP`, so ``observe`` finds it in any namespace,
and a forwarder never touches another forwarder's interfaces.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

Plan = dict[str, Any]
Applied = dict[str, Any]

#: IFLA_GROUP given to every interface we create ("nsm" in ASCII).
TAG_GROUP = 0x6E736D
#: Prefix of the interface alias of every interface we create.
TAG_PREFIX = "nsm:"


def build_group(xcon_id: str) -> int:
    """The interface group an interface of ``xcon_id`` is created in, until it is tagged (then
    it moves to :data:`TAG_GROUP`): an untagged interface in this group can only be a leftover
    of this id (a worker killed between creating and tagging it), never an interface another
    id is building at this moment. In ``2**31 .. 2**32 - 1``, apart from batch tombstone
    groups and :data:`TAG_GROUP`."""
    return (1 << 31) | (zlib.crc32(f"{_owner}/{xcon_id}".encode()) & 0x7FFFFFFF)


#: The forwarder whose interfaces this process tags and owns (its FORWARDER_NAME); set by
#: :func:`set_owner` from the driver's ``init``. Two forwarders on one node never touch each
#: other's interfaces, because each only owns aliases with its own name.
_owner = "nsm-forwarder"


#: Longest forwarder name that owns interfaces, in UTF-8 bytes: with a cross-connect id of up to
#: 128 bytes (plan_values.MAX_ID_BYTES) every tag fits the kernel's 255-byte alias.
MAX_OWNER_BYTES = 110


def set_owner(name: str) -> None:
    """Tag interfaces as belonging to forwarder ``name`` (which contains no '/')."""
    global _owner
    if not name or "/" in name:
        raise ValueError(f"owner {name!r} must be non-empty and contain no '/'")
    if len(name.encode()) > MAX_OWNER_BYTES:
        raise ValueError(f"forwarder name {name!r} is longer than {MAX_OWNER_BYTES} bytes")
    _owner = name


def tag(xcon_id: str, side: str) -> str:
    """The alias that marks an interface as end ``side`` of our cross-connect ``xcon_id``:
    ``nsm:<forwarder name>/<xcon id>:<side>``."""
    return f"{TAG_PREFIX}{_owner}/{xcon_id}:{side}"


def parse_tag(alias: str | None) -> tuple[str, str] | None:
    """(xcon id, side) of one of our aliases, or None for anyone else's interface
    (including another forwarder's)."""
    mine = f"{TAG_PREFIX}{_owner}/"
    if not alias or not alias.startswith(mine):
        return None
    xcon_id, sep, side = alias[len(mine) :].rpartition(":")
    if not sep or not xcon_id:
        return None
    return xcon_id, side


def remove_each(remove: Callable[[Applied], None], records: list[Applied]) -> list[Any]:
    """``remove_many`` done one record at a time: per record None or its error (wire form)."""
    from nsm_forwarder.drivers.errors import ForwarderError

    errors: list[Any] = []
    for record in records:
        try:
            remove(record)
            errors.append(None)
        except ForwarderError as exc:
            errors.append(exc.to_wire())
    return errors


class Driver(Protocol):
    """What every driver implements. All methods run in a worker process.

    - ``init(config)``: called once in every worker before any other call, with
      ``{"owner": forwarder name, "src_ip": str, "vxlan_port": int, ...}`` (the driver's own
      settings among them, e.g. ``wireguard_backend``, ``vpp_api_socket``; call
      :func:`set_owner`);
      checks the forwarder can work here (raises a ForwarderError with a clear message when it
      cannot, e.g. no interface carries ``src_ip``)
      and returns ``{"local": [types], "remote": [types], "egress": {...} | None}``: the
      mechanism types to advertise and what was found about the egress interface; optionally
      ``"remove_slots": n``, how many ``remove_many`` calls one worker can have waiting at once
      (default 1).
    - ``apply(plan)``: build the plan; each step records its undo and a failure unwinds every
      step done before it, then raises a :class:`~nsm_forwarder.drivers.errors.ForwarderError`.
      Returns the applied record.
    - ``remove(applied)``: idempotent; removes only interfaces carrying our tag for that id;
      missing interfaces or namespaces are not errors. It also accepts the *plan* instead of
      the applied record (then it removes whatever that plan may have left, e.g. after a worker
      died mid-apply).
    - ``observe()``: every tagged interface that really exists, in every namespace, as
      ``{"id", "side", "inode", "name", "ifindex"}`` dicts (reads the kernel, never a cache).
    - ``sweep(found)``: delete those ``observe`` entries (orphans no cross-connect owns) that
      still carry their tag, with anything the driver runs for them; returns how many.
    - ``stats(entries)``: counters (``rx_bytes``, ``tx_bytes``, ``rx_packets``, ``tx_packets``,
      ``rx_error_packets``, ``tx_error_packets``) of each ``{"key", "id", "side", "inode",
      "name"}`` pod end, keyed by ``key``; ends that are gone are left out.
    - ``remove_many(records)``: ``remove`` of each, in as few kernel operations as the driver
      can; per record None or its error as ``ForwarderError.to_wire()`` (see
      :func:`remove_each`). It may return a ``concurrent.futures.Future`` of that list instead,
      when the last of its work is a wait that needs nothing else of the driver (the kernel's
      group delete): the worker answers when it is done and serves other calls meanwhile.
    - ``epoch()``: names the running data plane; it changes when the data plane restarted and
      lost everything (a new VPP), and then the forwarder rebuilds every cross-connect. A data
      plane that cannot restart under the forwarder (the kernel) answers ``""``.

    ``observe`` entries may carry ``"complete": False`` (the interface exists but its other
    half in the data plane does not: the end counts as missing) and ``"inode": None`` (an
    object of the data plane alone, e.g. a memif, standing for its end wherever the pod is).
    """

    name: str

    def init(self, config: dict[str, Any]) -> dict[str, Any]: ...

    def apply(self, plan: Plan) -> Applied: ...

    def remove(self, applied: Applied) -> None: ...

    def remove_many(self, records: list[Applied]) -> list[Any] | Future[list[Any]]: ...

    def observe(self) -> list[dict[str, Any]]: ...

    def sweep(self, found: list[dict[str, Any]]) -> int: ...

    def stats(self, entries: list[dict[str, Any]]) -> dict[str, dict[str, int]]: ...

    def epoch(self) -> str: ...

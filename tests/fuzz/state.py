"""What a forwarder holds, seen three ways: the kernel (tagged interfaces in every namespace,
read with the driver's own :func:`~nsm_forwarder.drivers.linux.sweep.tagged_links`), the Store
(rows with an applied record) and the Monitor (its INITIAL_STATE_TRANSFER); and the checks that
they agree: one id owns exactly one set of interfaces, no tagged interface without a row, no row
without its interfaces."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import grpc
from google.protobuf import empty_pb2

from nsm_forwarder.actors.store import read_records
from nsm_forwarder.drivers.base import set_owner
from nsm_forwarder.drivers.linux.sweep import tagged_links
from nsm_forwarder.proto import crossconnect_pb2
from tests.helpers import Forwarder, wait_until

#: (netns inode, interface name) of one end
Where = tuple[int, str]


@dataclass
class Seen:
    #: id -> side -> every tagged interface of that end found in the kernel
    kernel: dict[str, dict[str, list[Where]]]
    #: ids with an applied row in the Store
    store: set[str]
    #: id -> the cross-connect the Monitor reports
    reported: dict[str, crossconnect_pb2.CrossConnect]


def kernel_sets(owner: str) -> dict[str, dict[str, list[Where]]]:
    """Every interface tagged by forwarder ``owner``, by id and side."""
    set_owner(owner)
    found: dict[str, dict[str, list[Where]]] = defaultdict(lambda: defaultdict(list))
    for inode, link, xid, side in tagged_links():
        found[xid][side].append((inode, link.name))
    return {xid: dict(sides) for xid, sides in found.items()}


def store_ids(fwd: Forwarder) -> set[str]:
    state = os.path.join(fwd.workdir, "forwarder-state", fwd.name)
    return {r.id for r in read_records(state) if r.applied is not None}


def reported(fwd: Forwarder, timeout: float = 10.0) -> dict[str, crossconnect_pb2.CrossConnect]:
    events = fwd.xcon_monitor().MonitorCrossConnects(empty_pb2.Empty(), timeout=timeout)
    try:
        first = next(events)
    finally:
        events.cancel()
    return {xid: x for xid, x in first.cross_connects.items()}


def seen(fwd: Forwarder) -> Seen:
    return Seen(kernel_sets(fwd.name), store_ids(fwd), reported(fwd))


def end_of(xcon: crossconnect_pb2.CrossConnect, side: str) -> Where | None:
    """Where the ``side`` ("src"/"dst") end of a local cross-connect is, by its request."""
    conn = xcon.source if side == "src" else xcon.destination
    if len(conn.path.path_segments) > 1:
        return None  # the remote side of a tunnel: nothing of it in a pod here
    params = conn.mechanism.parameters
    return int(params["netnsInode"]), params["name"]


def disagreements(s: Seen) -> list[str]:
    """Every way the kernel, the Store and the Monitor disagree (empty when they agree)."""
    problems = []
    for xid, sides in sorted(s.kernel.items()):
        for side, where in sorted(sides.items()):
            if len(where) != 1:
                problems.append(f"{xid!r}: {len(where)} tagged interfaces for {side}: {where}")
        if xid not in s.reported or xid not in s.store:
            problems.append(f"{xid!r}: tagged interfaces {sides} but no cross-connect (leak)")
    for xid, xcon in sorted(s.reported.items()):
        if xid not in s.store:
            problems.append(f"{xid!r}: reported but not in the Store")
        sides = s.kernel.get(xid, {})
        for side in ("src", "dst"):
            want = end_of(xcon, side)
            if want is None:
                continue
            got = sides.get(side, [])
            if got != [want]:
                problems.append(f"{xid!r}: {side} end {want} reported, kernel has {got} (lost)")
    for xid in sorted(s.store - set(s.reported)):
        problems.append(f"{xid!r}: in the Store but not reported")
    return problems


def settled(fwd: Forwarder, timeout: float = 10.0) -> list[str]:
    """The disagreements left once calls whose clients gave up have finished (empty: none)."""
    problems: list[str] = []

    def agree() -> bool:
        nonlocal problems
        problems = disagreements(seen(fwd))
        return not problems

    try:
        wait_until(agree, timeout, "kernel, Store and Monitor to agree")
    except AssertionError:
        pass
    return problems


def close_everything(fwd: Forwarder, timeout: float = 30.0) -> list[str]:
    """Close every cross-connect the forwarder reports (its own copy); the failures."""
    stub = fwd.stub()
    failures = []
    for xid, xcon in reported(fwd).items():
        try:
            stub.Close(xcon, timeout=timeout)
        except grpc.RpcError as err:
            failures.append(f"Close {xid!r}: {err.code().name}: {err.details()}")
    return failures

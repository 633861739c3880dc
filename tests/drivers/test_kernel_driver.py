"""KernelDriver and the netns helpers against real network namespaces (root only)."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import nsm_forwarder.drivers.kernel.driver as kernel_driver
from nsm_forwarder.drivers import base
from nsm_forwarder.drivers.errors import (
    AlreadyExists,
    DriverError,
    InvalidRequest,
    NotFound,
)
from nsm_forwarder.drivers.kernel.driver import KernelDriver
from nsm_forwarder.drivers.linux import addressing, netns
from nsm_forwarder.drivers.linux.undo import UndoStack
from tests.drivers.conftest import Netns, needs_root

pytestmark = needs_root()

TAG_GROUP = str(base.TAG_GROUP)


def end(ns: Netns, name: str = "nsm0", addr: str = "", **kw: Any) -> dict[str, Any]:
    return {
        "inode": ns.inode,
        "name": name,
        "addr": addr,
        "routes": kw.get("routes", []),
        "neighbors": kw.get("neighbors", []),
    }


def plan(xid: str, src: dict[str, Any], dst: dict[str, Any], mtu: int = 1400) -> dict[str, Any]:
    return {"id": xid, "kind": "local", "mtu": mtu, "src": src, "dst": dst}


def unused_inode() -> int:
    inode = 4026539999
    while inode in netns.all_namespaces():
        inode += 1
    return inode


def ping(ns: Netns, ip: str) -> bool:
    return ns.exec("ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0


@pytest.fixture
def drv() -> Iterator[KernelDriver]:
    driver = KernelDriver()
    yield driver
    driver.sockets.close()


# --- netns helpers ---------------------------------------------------------------------------


def test_open_netns_by_inode(make_netns: Callable[[], Netns]) -> None:
    ns = make_netns()
    fd = netns.open_netns(ns.inode)
    try:
        assert os.fstat(fd).st_ino == ns.inode
    finally:
        os.close(fd)
    assert netns.all_namespaces()[ns.inode] == ns.path
    with pytest.raises(NotFound, match=f"no network namespace with inode {unused_inode()}"):
        netns.open_netns(unused_inode())


def test_open_netns_finds_process_namespace(make_netns: Callable[[], Netns]) -> None:
    """A namespace held only by a process (no /var/run/netns mount) is found via /proc."""
    ns = make_netns()
    proc = ns.exec("sh", "-c", "exec sleep 30 </dev/null >/dev/null 2>&1 & echo $!")
    pid = int(proc.stdout.strip())
    try:
        inode = ns.inode
        ns.delete()  # unmounted; only the sleeping process keeps it alive
        assert netns.all_namespaces()[inode] == f"/proc/{pid}/ns/net"
        fd = netns.open_netns(inode)
        os.close(fd)
    finally:
        os.kill(pid, 9)


def test_iproute_in_does_not_move_thread_or_leak_fds(make_netns: Callable[[], Netns]) -> None:
    ns = make_netns()
    ns.ip("link", "add", "p0", "type", "veth", "peer", "name", "p1")
    own = netns.current_netns_inode()
    fd = netns.open_netns(ns.inode)
    try:
        nfds = len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            with netns.iproute_in(fd) as ipr:
                names = {m.get("ifname") for m in ipr.link("dump")}
                assert {"lo", "p0", "p1"} <= names
                assert netns.current_netns_inode() == own
        # other threads of the test process (gRPC, servers) may open a few fds meanwhile;
        # a leak would show as one or more per iteration
        assert len(os.listdir("/proc/self/fd")) - nfds < 10
        assert not [t for t in threading.enumerate() if t.name == "netns-socket"]
    finally:
        os.close(fd)
    assert netns.current_netns_inode() == own


def test_undo_stack_runs_in_reverse_and_survives_errors(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []
    undo = UndoStack()
    undo.push("one", lambda: done.append(1))
    undo.push("boom", lambda: 1 / 0)
    undo.push("three", lambda: done.append(3))
    failed = undo.unwind()
    assert done == [3, 1]
    assert [what for what, _ in failed] == ["boom"]
    assert "undo failed: boom" in caplog.text
    assert len(undo) == 0


# --- apply -----------------------------------------------------------------------------------


def test_apply_ping_mtu_tag_and_remove(drv: KernelDriver, two_netns: tuple[Netns, Netns]) -> None:
    a, b = two_netns
    own = netns.current_netns_inode()
    applied = drv.apply(
        plan("x1", end(a, "nsm0", "10.60.0.1/30"), end(b, "nsm0", "10.60.0.2/30"), mtu=1400)
    )
    assert netns.current_netns_inode() == own
    la, lb = a.links()["nsm0"], b.links()["nsm0"]
    assert applied == {
        "id": "x1",
        "kind": "local",
        "src": {"inode": a.inode, "name": "nsm0", "ifindex": la["ifindex"]},
        "dst": {"inode": b.inode, "name": "nsm0", "ifindex": lb["ifindex"]},
    }
    for link, side in ((la, "src"), (lb, "dst")):
        assert link["mtu"] == 1400
        assert link["group"] == TAG_GROUP
        assert link["ifalias"] == base.tag("x1", side)
        assert link["linkinfo"]["info_kind"] == "veth"
        assert "UP" in link["flags"]
    assert ping(a, "10.60.0.2") and ping(b, "10.60.0.1")

    drv.remove(applied)
    assert netns.current_netns_inode() == own
    assert a.links() == {} and b.links() == {}


def test_apply_ipv6_and_different_names(drv: KernelDriver, two_netns: tuple[Netns, Netns]) -> None:
    a, b = two_netns
    applied = drv.apply(
        plan("x6", end(a, "left", "fd00:60::1/64"), end(b, "right", "fd00:60::2/64"))
    )
    assert set(a.links()) == {"left"} and set(b.links()) == {"right"}
    addrs = [i["local"] for x in a.ipj("-6", "addr", "show", "dev", "left") for i in x["addr_info"]]
    assert "fd00:60::1" in addrs
    assert ping(a, "fd00:60::2")  # usable at once: no DAD wait
    drv.remove(applied)
    assert a.links() == {} and b.links() == {}


def test_apply_both_ends_in_one_netns(drv: KernelDriver, make_netns: Callable[[], Netns]) -> None:
    a = make_netns()
    applied = drv.apply(plan("x2", end(a, "e0", "10.61.0.1/24"), end(a, "e1", "10.61.0.2/24")))
    links = a.links()
    assert links["e0"]["ifalias"] == base.tag("x2", "src")
    assert links["e1"]["ifalias"] == base.tag("x2", "dst")
    assert applied["src"]["inode"] == applied["dst"]["inode"] == a.inode
    drv.remove(applied)
    assert a.links() == {}


def test_apply_routes_and_neighbors(drv: KernelDriver, two_netns: tuple[Netns, Netns]) -> None:
    a, b = two_netns
    src = end(
        a,
        "nsm0",
        "10.62.0.1/30",
        routes=[
            {"prefix": "10.70.0.0/16", "gateway": "10.62.0.2"},
            {"prefix": "10.71.0.0/24", "gateway": ""},
        ],
        neighbors=[{"ip": "10.62.0.2", "mac": "02:00:00:00:62:02"}],
    )
    dst = end(
        b,
        "nsm1",
        "fd00:62::2/64",
        routes=[
            {"prefix": "fd00:70::/48", "gateway": "fd00:62::1"},
            {"prefix": "fd00:71::/64", "gateway": ""},
        ],
        neighbors=[{"ip": "fd00:62::1", "mac": "02:00:00:00:62:01"}],
    )
    drv.apply(plan("xr", src, dst))

    routes_a = {r["dst"]: r for r in a.ipj("route", "show", "table", "main")}
    assert routes_a["10.70.0.0/16"]["gateway"] == "10.62.0.2"
    assert routes_a["10.70.0.0/16"]["dev"] == "nsm0"
    assert "gateway" not in routes_a["10.71.0.0/24"]
    assert routes_a["10.71.0.0/24"]["dev"] == "nsm0"
    assert routes_a["10.71.0.0/24"]["scope"] == "link"
    routes_b = {r["dst"]: r for r in b.ipj("-6", "route", "show", "table", "main")}
    assert routes_b["fd00:70::/48"]["gateway"] == "fd00:62::1"
    assert routes_b["fd00:71::/64"]["dev"] == "nsm1"

    neigh_a = a.ipj("neigh", "show", "dev", "nsm0")
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh_a] == [
        ("10.62.0.2", "02:00:00:00:62:02", ["PERMANENT"])
    ]
    neigh_b = [n for n in b.ipj("-6", "neigh", "show", "dev", "nsm1") if "PERMANENT" in n["state"]]
    assert [(n["dst"], n["lladdr"]) for n in neigh_b] == [("fd00:62::1", "02:00:00:00:62:01")]


def test_apply_without_mtu_keeps_kernel_default(
    drv: KernelDriver, two_netns: tuple[Netns, Netns]
) -> None:
    a, b = two_netns
    drv.apply(plan("x0", end(a), end(b), mtu=0))
    assert a.links()["nsm0"]["mtu"] == 1500


def test_unknown_inode_is_not_found(drv: KernelDriver, make_netns: Callable[[], Netns]) -> None:
    a = make_netns()
    missing = unused_inode()
    bad = end(a)
    bad["inode"] = missing
    with pytest.raises(NotFound, match=str(missing)):
        drv.apply(plan("xn", end(a), bad))
    with pytest.raises(NotFound):
        drv.apply(plan("xn", bad, end(a, "other")))
    assert a.links() == {}


def test_invalid_plans(drv: KernelDriver, two_netns: tuple[Netns, Netns]) -> None:
    a, b = two_netns
    with pytest.raises(InvalidRequest, match="kind"):
        drv.apply({**plan("xi", end(a), end(b)), "kind": "remote"})
    with pytest.raises(InvalidRequest):
        drv.apply(plan("xi", end(a, "same"), end(a, "same")))
    with pytest.raises(InvalidRequest, match="MAC"):
        drv.apply(plan("xi", end(a), end(b, neighbors=[{"ip": "10.0.0.1", "mac": "zz"}])))
    with pytest.raises(InvalidRequest):
        drv.apply(plan("xi", end(a, "x" * 16), end(b)))
    with pytest.raises(InvalidRequest):
        drv.apply(plan("xi", end(a), end(b, routes=[{"prefix": "nope", "gateway": ""}])))
    assert a.links() == {} and b.links() == {}


def test_foreign_interface_with_same_name(
    drv: KernelDriver, two_netns: tuple[Netns, Netns]
) -> None:
    a, b = two_netns
    b.ip("link", "add", "nsm0", "type", "veth", "peer", "name", "theirs")
    before = b.links()
    with pytest.raises(AlreadyExists, match=f"interface nsm0 already exists in netns {b.inode}"):
        drv.apply(plan("xf", end(a), end(b)))
    assert a.links() == {}
    assert b.links() == before  # untouched
    assert "ifalias" not in b.links()["nsm0"]


def test_interface_tagged_for_another_id_is_foreign(
    drv: KernelDriver, two_netns: tuple[Netns, Netns]
) -> None:
    a, b = two_netns
    other = drv.apply(plan("other", end(a), end(b, "peer")))
    with pytest.raises(AlreadyExists):
        drv.apply(plan("mine", end(a), end(b)))
    assert set(a.links()) == {"nsm0"} and a.links()["nsm0"]["ifalias"] == base.tag("other", "src")
    drv.remove(other)


def test_stale_leftover_of_same_id_is_replaced(
    drv: KernelDriver, two_netns: tuple[Netns, Netns]
) -> None:
    a, b = two_netns
    first = drv.apply(plan("xs", end(a, addr="10.63.0.1/30"), end(b, addr="10.63.0.2/30")))
    second = drv.apply(plan("xs", end(a, addr="10.63.0.1/30"), end(b, addr="10.63.0.2/30")))
    assert second["src"]["ifindex"] != first["src"]["ifindex"]
    assert set(a.links()) == {"nsm0"} and set(b.links()) == {"nsm0"}
    assert ping(a, "10.63.0.2")


def _assert_empty(*nss: Netns) -> None:
    for ns in nss:
        assert ns.links() == {}, ns.name
        for family in ("-4", "-6"):
            assert ns.ipj(family, "route", "show", "table", "all") == [], ns.name
            assert ns.ipj(family, "addr") == [] or all(
                x["ifname"] == "lo" for x in ns.ipj(family, "addr")
            )
        assert ns.ipj("neigh") == []


def test_rollback_after_late_kernel_failure(
    drv: KernelDriver, two_netns: tuple[Netns, Netns], caplog: pytest.LogCaptureFixture
) -> None:
    """The dst route step fails in the kernel: everything done before it is undone."""
    a, b = two_netns
    src = end(
        a,
        "nsm0",
        "10.64.0.1/30",
        routes=[{"prefix": "10.80.0.0/16", "gateway": "10.64.0.2"}],
        neighbors=[{"ip": "10.64.0.2", "mac": "02:00:00:00:64:02"}],
    )
    dst = end(
        b,
        "nsm0",
        "10.64.0.2/30",
        routes=[
            {"prefix": "10.81.0.0/16", "gateway": ""},
            {"prefix": "10.82.0.0/16", "gateway": "10.99.0.1"},  # not reachable
        ],
    )
    own = netns.current_netns_inode()
    with pytest.raises(DriverError) as info:
        drv.apply(plan("xb", src, dst))
    assert type(info.value) is DriverError
    msg = info.value.message
    assert "route 10.82.0.0/16 via 10.99.0.1" in msg
    assert f"nsm0 in netns {b.inode}" in msg
    assert os.strerror(errno.ENETUNREACH) in msg
    assert netns.current_netns_inode() == own
    assert "undo failed" not in caplog.text  # a clean rollback
    _assert_empty(a, b)


def test_rollback_after_failure_at_last_step(
    drv: KernelDriver, two_netns: tuple[Netns, Netns], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure at the very last step (dst neighbour) undoes everything, routes included."""
    from pyroute2.netlink.exceptions import NetlinkError

    a, b = two_netns
    real = addressing.add_neighbor

    def failing(ipr: Any, index: int, neigh: addressing.Neighbor) -> Callable[[], None]:
        if str(neigh.ip) == "10.65.0.1":
            raise NetlinkError(errno.EINVAL)
        return real(ipr, index, neigh)

    monkeypatch.setattr(addressing, "add_neighbor", failing)
    nb = [{"ip": "10.65.0.2", "mac": "02:00:00:00:65:02"}]
    src = end(a, "nsm0", "10.65.0.1/30", routes=[{"prefix": "10.90.0.0/16", "gateway": ""}])
    src["neighbors"] = nb
    dst = end(
        b,
        "nsm0",
        "10.65.0.2/30",
        routes=[{"prefix": "10.91.0.0/16", "gateway": "10.65.0.1"}],
        neighbors=[{"ip": "10.65.0.1", "mac": "02:00:00:00:65:01"}],
    )
    with pytest.raises(DriverError, match="add neighbour 10.65.0.1 .*Invalid argument"):
        drv.apply(plan("xl", src, dst))
    _assert_empty(a, b)


def test_eexist_maps_to_already_exists_and_rolls_back(
    drv: KernelDriver, two_netns: tuple[Netns, Netns]
) -> None:
    """A route the pod already has (on its own interface) -> AlreadyExists; theirs untouched."""
    a, b = two_netns
    b.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    b.ip("link", "set", "eth0", "up")
    b.ip("route", "add", "10.95.0.0/16", "dev", "eth0")
    with pytest.raises(AlreadyExists, match="route 10.95.0.0/16"):
        drv.apply(plan("xe", end(a), end(b, routes=[{"prefix": "10.95.0.0/16", "gateway": ""}])))
    assert a.links() == {}
    assert set(b.links()) == {"eth0", "eth1"}
    assert [r["dev"] for r in b.ipj("route", "show", "10.95.0.0/16")] == ["eth0"]


# --- remove ----------------------------------------------------------------------------------


def test_remove_is_idempotent(drv: KernelDriver, two_netns: tuple[Netns, Netns]) -> None:
    a, b = two_netns
    applied = drv.apply(plan("xd", end(a), end(b)))
    drv.remove(applied)
    drv.remove(applied)
    assert a.links() == {} and b.links() == {}


def test_remove_after_netns_deletion(drv: KernelDriver, two_netns: tuple[Netns, Netns]) -> None:
    a, b = two_netns
    applied = drv.apply(plan("xg", end(a), end(b)))
    b.delete()
    drv.remove(applied)
    assert a.links() == {}
    a.delete()
    drv.remove(applied)


def test_remove_ignores_untagged_interface(
    drv: KernelDriver, two_netns: tuple[Netns, Netns]
) -> None:
    a, b = two_netns
    applied = drv.apply(plan("xu", end(a), end(b)))
    a.ip("link", "del", "nsm0")
    a.ip("link", "add", "nsm0", "type", "veth", "peer", "name", "nsm1")
    b.ip("link", "add", "nsm0", "type", "veth", "peer", "name", "nsm1")
    drv.remove(applied)
    assert set(a.links()) == {"nsm0", "nsm1"}
    assert set(b.links()) == {"nsm0", "nsm1"}


def test_remove_falls_back_to_ifindex(drv: KernelDriver, two_netns: tuple[Netns, Netns]) -> None:
    a, b = two_netns
    applied = drv.apply(plan("xi", end(a), end(b)))
    a.ip("link", "set", "nsm0", "name", "renamed")
    drv.remove(applied)
    assert a.links() == {} and b.links() == {}


# --- observe ---------------------------------------------------------------------------------


def test_observe_finds_exactly_our_interfaces(
    drv: KernelDriver, make_netns: Callable[[], Netns]
) -> None:
    a, b, c = make_netns(), make_netns(), make_netns()
    c.ip("link", "add", "foreign", "type", "veth", "peer", "name", "foreign1")
    c.ip("link", "set", "foreign", "alias", "not-ours")
    x1 = drv.apply(plan("o1", end(a, "n1"), end(b, "n1")))
    x2 = drv.apply(plan("o2", end(a, "n2"), end(c, "n2")))
    own = netns.current_netns_inode()
    mine = {a.inode, b.inode, c.inode}
    seen = sorted(
        (o["id"], o["side"], o["inode"], o["name"], o["ifindex"])
        for o in drv.observe()
        if o["inode"] in mine
    )
    assert netns.current_netns_inode() == own
    expect = sorted(
        (x["id"], side, x[side]["inode"], x[side]["name"], x[side]["ifindex"])
        for x in (x1, x2)
        for side in ("src", "dst")
    )
    assert seen == expect
    drv.remove(x1)
    assert {(o["id"], o["side"]) for o in drv.observe() if o["inode"] in mine} == {
        ("o2", "src"),
        ("o2", "dst"),
    }


def test_apply_and_remove_are_fast(drv: KernelDriver, two_netns: tuple[Netns, Netns]) -> None:
    """Loose bound (CI is noisy): one apply well under the 50 ms target on an idle machine."""
    a, b = two_netns
    drv.apply(plan("warm", end(a, "w0"), end(b, "w0")))
    t0 = time.perf_counter()
    applied = drv.apply(
        plan(
            "fast",
            end(a, "f0", "10.66.0.1/30", routes=[{"prefix": "10.67.0.0/16", "gateway": ""}]),
            end(b, "f0", "10.66.0.2/30"),
        )
    )
    elapsed = time.perf_counter() - t0
    drv.remove(applied)
    assert elapsed < 0.25


def test_remove_many_deletes_a_batch_by_group_and_leaves_foreign_alone(
    drv: KernelDriver, two_netns: tuple[Netns, Netns]
) -> None:
    """remove_many: 12 cross-connects between two pods go in one group delete; a record whose
    interface is no longer ours is reported done without touching it; a bad record gets its
    own error."""
    a, b = two_netns
    applied = [
        drv.apply(
            plan(f"m{i}", end(a, f"ma{i}", f"10.66.{i}.1/30"), end(b, f"mb{i}", f"10.66.{i}.2/30"))
        )
        for i in range(12)
    ]
    # someone replaced m0's interface in pod A (same name, not ours)
    a.exec("ip", "link", "del", "ma0")
    a.exec("ip", "link", "add", "ma0", "type", "veth", "peer", "name", "other0")
    errors = drv.remove_many([*applied, {"id": "broken", "kind": "local"}]).result(10)
    assert errors[:12] == [None] * 12
    assert errors[12]["code"] == "INVALID_ARGUMENT"
    assert sorted(a.links()) == ["ma0", "other0"] and b.links() == {}


def test_remove_many_waits_for_the_kernel_off_the_driver_thread(
    drv: KernelDriver, two_netns: tuple[Netns, Netns], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group delete of a batch (the kernel's unregister wait, tens of ms) runs on a thread
    of its own: the driver applies another cross-connect meanwhile, and the batch's future is
    done only once its interfaces are gone."""
    a, b = two_netns
    release = threading.Event()
    real = kernel_driver.delete_tomb

    def held(rt: Any, tomb: Any) -> Any:  # the kernel's wait, made as long as the test needs
        assert release.wait(10)
        return real(rt, tomb)

    monkeypatch.setattr(kernel_driver, "delete_tomb", held)
    batch = [
        drv.apply(
            plan(f"w{i}", end(a, f"wa{i}", f"10.67.{i}.1/30"), end(b, f"wb{i}", f"10.67.{i}.2/30"))
        )
        for i in range(8)
    ]
    removing = drv.remove_many(batch)
    other = drv.apply(plan("w9", end(a, "wa9", "10.67.9.1/30"), end(b, "wb9", "10.67.9.2/30")))
    assert not removing.done()  # the apply did not wait for the deletes
    release.set()
    assert removing.result(10) == [None] * 8
    assert list(a.links()) == ["wa9"] and list(b.links()) == ["wb9"]
    drv.remove(other)

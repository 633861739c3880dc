"""Which interfaces an id may delete as its own: tagged for it, or an untagged leftover in its
own build group, never an untagged interface another id is building (found by the long fuzz
run: a Close of one id swept the fresh, not yet tagged veth of a concurrent Request)."""

from __future__ import annotations

import pytest

from nsm_forwarder.drivers.base import TAG_GROUP, build_group, tag
from nsm_forwarder.drivers.linux import netns
from nsm_forwarder.drivers.linux.ends import remove_end
from nsm_forwarder.drivers.linux.links import Link, get_link
from tests.helpers import IS_ROOT, Pods


def test_owned_as() -> None:
    mine, other = tag("a", "src"), tag("b", "src")
    assert Link(1, "x", mine, TAG_GROUP).owned_as(mine)
    assert not Link(1, "x", other, TAG_GROUP).owned_as(mine)
    # untagged: only in the id's own build group
    assert Link(1, "x", None, build_group("a")).owned_as(mine)
    assert not Link(1, "x", None, build_group("b")).owned_as(mine)
    assert not Link(1, "x", None, TAG_GROUP).owned_as(mine)
    assert not Link(1, "x", "", 0).owned_as(mine)


def test_build_groups_are_apart_from_the_tag_group() -> None:
    groups = {build_group(f"id-{i}") for i in range(1000)}
    assert len(groups) == 1000
    assert all(g >= 1 << 31 and g < 1 << 32 for g in groups)
    assert TAG_GROUP not in groups


@pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces)")
def test_a_close_leaves_another_ids_untagged_interface_alone() -> None:
    pods = Pods()
    try:
        pod = pods.make()
        inode = pod.inode
        with netns.netns_fd(inode) as fd, netns.iproute_in(fd) as ipr:
            # what a Request of id "b" has just created, before its tag is set
            group = build_group("b")
            ipr.link("add", ifname="fc", kind="veth", group=group, peer={"ifname": "fd"})
            remove_end(ipr, "a", "dst", inode, "fc", None)  # id a's Close names fc too
            assert get_link(ipr, ifname="fc") is not None
            remove_end(ipr, "b", "dst", inode, "fc", None)  # id b's own leftover goes
            assert get_link(ipr, ifname="fc") is None
    finally:
        pods.cleanup()

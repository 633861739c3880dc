"""WireGuard tunnels through the kernel's WireGuard module, end to end at the driver level.

This machine's kernel has no WireGuard, so these tests skip here; tests/vm/test_vm.py boots a
Debian kernel that has it (qemu) over this very file system and runs them inside that VM, with
real namespaces, real kernel ``wireguard`` devices and real pings. On a host whose kernel has
WireGuard they run directly.
"""

from __future__ import annotations

import logging
import os

import pytest

from nsm_forwarder.drivers.errors import AlreadyExists
from nsm_forwarder.drivers.kernel import wgkernel
from nsm_forwarder.drivers.plan import plan_from_xcon
from tests.drivers.conftest import needs_root
from tests.drivers.nodes import Bed, Node, no_daemons
from tests.helpers import Pod, Pods, private_key_forms, remote_pair, sh

NO_KERNEL_WIREGUARD = wgkernel.unavailable() if os.geteuid() == 0 else "needs root"
pytestmark = [
    needs_root(),
    pytest.mark.skipif(
        NO_KERNEL_WIREGUARD is not None,
        reason=f"{NO_KERNEL_WIREGUARD}; tests/vm/test_vm.py runs these in a VM whose kernel has it",
    ),
]
NODE_LINKS = ["lo", "ul0"]


def udp_ports(netns_name: str) -> set[int]:
    """Local UDP ports with a socket in this namespace (kernel sockets included)."""
    out = sh("ip", "netns", "exec", netns_name, "ss", "-H", "-u", "-a", "-n")
    return {int(line.split()[3].rpartition(":")[2]) for line in out.splitlines() if line.strip()}


def wg_show(pod: Pod, what: str) -> str:
    """``wg show nsm0 <what>`` in the pod (wireguard-tools reads the kernel device)."""
    return sh("ip", "netns", "exec", pod.name, "wg", "show", "nsm0", what).strip()


def assert_clean(node: Node, *pods: Pod) -> None:
    for pod in pods:
        assert pod.links() == [], pod.name
    assert node.node_links() == NODE_LINKS
    assert no_daemons(node)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_kernel_tunnel_pings_keeps_its_socket_on_the_node_and_goes_away(
    bed: Bed, two_pods: tuple[Pod, Pod], v6: bool
) -> None:
    u, a, b = bed(v6=v6, backend="auto")
    assert a.driver.underlay.wireguard == "kernel" and b.driver.underlay.wireguard == "kernel"
    client, endpoint = two_pods
    pair = remote_pair("kwg", client, endpoint, u.a_ip, u.b_ip, "WIREGUARD", ports=(51830, 51831))
    out = a.call("apply", plan_from_xcon(pair.outgoing, mtu=16000, egress_mtu=1500))
    inc = b.call("apply", plan_from_xcon(pair.incoming, mtu=16000, egress_mtu=1500))
    assert out["backend"] == "kernel" and inc["backend"] == "kernel"
    assert client.links() == ["nsm0"] and endpoint.links() == ["nsm0"]
    details = client.ip("-d", "link", "show", "nsm0")
    assert "wireguard" in details and f"mtu {1420 if v6 else 1440} " in details
    assert wg_show(client, "listen-port") == "51830"
    peer_key = pair.outgoing.destination.mechanism.parameters["dst_public_key"]
    endpoint_text = f"[{u.b_ip}]:51831" if v6 else f"{u.b_ip}:51831"
    assert wg_show(client, "endpoints") == f"{peer_key}\t{endpoint_text}"
    assert client.ping_over_tunnel("10.60.1.2") and endpoint.ping("10.60.1.1")
    # the device lives in the pod, its UDP socket in the node namespace, no process anywhere
    assert a.node_links() == NODE_LINKS and b.node_links() == NODE_LINKS
    assert 51830 in udp_ports(u.a) and 51830 not in udp_ports(client.name)
    assert no_daemons(a, b)
    a.call("remove", out)
    b.call("remove", inc)
    assert_clean(a, client)
    assert_clean(b, endpoint)
    assert 51830 not in udp_ports(u.a)


def test_kernel_and_userspace_ends_talk_to_each_other(bed: Bed, two_pods: tuple[Pod, Pod]) -> None:
    """Node A on the kernel module, node B on wireguard-go: one protocol, one tunnel."""
    u, a, b = bed(backend="kernel", b_backend="userspace")
    client, endpoint = two_pods
    pair = remote_pair("mixed", client, endpoint, u.a_ip, u.b_ip, "WIREGUARD")
    out = a.call("apply", plan_from_xcon(pair.outgoing, mtu=1))
    inc = b.call("apply", plan_from_xcon(pair.incoming, mtu=1))
    assert (out["backend"], inc["backend"]) == ("kernel", "userspace")
    assert no_daemons(a) and not no_daemons(b)
    assert client.ping_over_tunnel("10.60.1.2") and endpoint.ping("10.60.1.1")
    a.call("remove", out)
    b.call("remove", inc)
    assert_clean(a, client)
    assert_clean(b, endpoint)


def test_kernel_listen_port_clash_is_rolled_back_without_showing_a_key(
    bed: Bed, pods: Pods, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    u, a, _ = bed(backend="kernel")
    first_pod, second_pod = pods.make(), pods.make()
    first = remote_pair("kp1", first_pod, pods.make(), u.a_ip, u.b_ip, "WIREGUARD")
    second = remote_pair("kp2", second_pod, pods.make(), u.a_ip, u.b_ip, "WIREGUARD")
    applied = a.call("apply", plan_from_xcon(first.outgoing, mtu=1))
    with pytest.raises(AlreadyExists) as err:
        a.call("apply", plan_from_xcon(second.outgoing, mtu=1))
    assert str(err.value) == "WireGuard listen port 51820 is already in use on this node"
    assert second_pod.links() == [] and a.node_links() == NODE_LINKS
    assert "configure nsmwg" in caplog.text  # the steps were logged ...
    seen = " ".join([str(err.value), repr(err.value), str(err.value.to_wire()), caplog.text])
    for form in private_key_forms(second.outgoing.destination.mechanism.parameters):
        assert form not in seen  # ... without any key
    a.call("remove", applied)
    assert_clean(a, first_pod)


def test_kernel_leftovers_of_an_interrupted_apply_are_cleaned(
    bed: Bed, two_pods: tuple[Pod, Pod]
) -> None:
    """A worker killed after creating the device (still in the node namespace, untagged): a new
    apply of the same plan replaces it, and removing the plan alone deletes it."""
    u, a, _ = bed(backend="kernel")
    client, _ = two_pods
    pair = remote_pair("kint", *two_pods, u.a_ip, u.b_ip, "WIREGUARD")
    plan = plan_from_xcon(pair.outgoing, mtu=1)
    a.plans.append(plan)
    (device,) = a.devices()

    def leave_device() -> None:
        from nsm_forwarder.drivers.linux import netns

        with netns.iproute_in(a.driver.node.fd()) as ipr:
            wgkernel.create(ipr, device)

    a.thread.submit(leave_device).result(30)
    assert device in a.node_links()
    a.call("remove", plan)
    assert a.node_links() == NODE_LINKS
    a.thread.submit(leave_device).result(30)
    applied = a.call("apply", plan)
    assert client.links() == ["nsm0"] and a.node_links() == NODE_LINKS
    a.call("remove", applied)
    assert_clean(a, client)


def test_kernel_orphan_sweep_deletes_the_device(bed: Bed, two_pods: tuple[Pod, Pod]) -> None:
    u, a, _ = bed(backend="kernel")
    client, _ = two_pods
    pair = remote_pair("korph", *two_pods, u.a_ip, u.b_ip, "WIREGUARD")
    plan = plan_from_xcon(pair.outgoing, mtu=1)
    a.call("apply", plan)
    found = [e for e in a.call("observe") if e["inode"] == client.inode]
    assert [(e["id"], e["name"]) for e in found] == [(plan["id"], "nsm0")]
    assert a.call("sweep", found) == 1
    assert_clean(a, client)

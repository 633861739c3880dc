"""Interop: a VXLAN cross-connect between a node whose forwarder drives VPP and a node whose
forwarder drives the kernel carries a ping (same VNI, same UDP port 4789). Packets only move
through a real VPP, so this runs with ``NSM_TEST_VPP_RUN`` (see conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.conftest import Node
from tests.helpers import Pods, remote_pair
from tests.vpp.conftest import REAL, VppBed

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not REAL, reason="packets move only through a real VPP (NSM_TEST_VPP_RUN)"),
]


def test_vxlan_between_vpp_and_kernel_forwarders_pings(
    vpp_bed: VppBed, node_factory: Callable[..., Node], pods: Pods
) -> None:
    u, vpp = vpp_bed.underlay, vpp_bed.vpp
    on_vpp = node_factory(netns=u.a, **vpp_bed.forwarder_env()).start()
    on_kernel = node_factory(netns=u.b, NSM_FORWARDER_SRC_IP=u.b_ip).start()
    client, endpoint = pods.make(), pods.make()
    pair = remote_pair("iop", client, endpoint, u.a_ip, u.b_ip, "VXLAN", vni=4242)
    on_vpp.forwarder.stub().Request(pair.outgoing, timeout=15)
    on_kernel.forwarder.stub().Request(pair.incoming, timeout=15)
    assert client.ping("10.60.1.2", count=3) and endpoint.ping("10.60.1.1")
    on_vpp.forwarder.stub().Close(pair.outgoing, timeout=15)
    on_kernel.forwarder.stub().Close(pair.incoming, timeout=15)
    assert client.links() == [] and endpoint.links() == []
    assert [str(d.tag) for d in vpp.ours()] == []


def test_demo_through_vpp(vpp_bed: VppBed) -> None:
    """``nsm-forwarder demo --driver vpp`` in the network namespace of a running VPP."""
    vpp = vpp_bed.vpp
    done = subprocess.run(
        [
            *("ip", "netns", "exec", vpp_bed.underlay.a),
            *(sys.executable, "-m", "nsm_forwarder.tools.cli", "demo", "--driver", "vpp"),
            *("--vpp-api-socket", vpp.api_socket, "--vpp-api-dir", vpp.api_dir),
            *("--vpp-stats-socket", vpp.stats_socket),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(driver vpp)" in done.stdout and "0% packet loss" in done.stdout
    assert [str(d.tag) for d in vpp.ours()] == []

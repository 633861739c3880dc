"""The wire contract: stubs are fresh; names and field numbers match NSM v0 (spec §1-2)."""

from __future__ import annotations

import pytest

from nsm_forwarder.proto import (
    connection_pb2,
    connectioncontext_pb2,
    crossconnect_pb2,
    forwarder_pb2,
    forwarderregistrar_pb2,
)
from nsm_forwarder.proto.generate import stale_files


def test_stubs_are_fresh() -> None:
    stale = stale_files()
    assert not stale, f"regenerate with: python -m nsm_forwarder.proto.generate ({stale})"


FIELDS = {
    forwarder_pb2.MechanismUpdate: {"remote_mechanisms": 1, "local_mechanisms": 2},
    forwarderregistrar_pb2.ForwarderRegistrationRequest: {
        "forwarder_name": 1,
        "forwarder_socket": 2,
    },
    forwarderregistrar_pb2.ForwarderRegistrationReply: {"registered": 1},
    forwarderregistrar_pb2.ForwarderUnRegistrationRequest: {"forwarder_name": 1},
    forwarderregistrar_pb2.ForwarderUnRegistrationReply: {"un_registered": 1},
    crossconnect_pb2.CrossConnect: {"id": 1, "payload": 2, "source": 4, "destination": 7},
    crossconnect_pb2.Metrics: {"metrics": 1},
    crossconnect_pb2.CrossConnectEvent: {"type": 1, "cross_connects": 2, "metrics": 3},
    connection_pb2.Mechanism: {"cls": 1, "type": 2, "parameters": 3},
    connection_pb2.PathSegment: {"name": 1, "id": 2, "token": 3, "expires": 4},
    connection_pb2.Path: {"index": 1, "path_segments": 2},
    connection_pb2.Connection: {
        "id": 1,
        "network_service": 2,
        "mechanism": 3,
        "context": 4,
        "labels": 5,
        "path": 6,
        "network_service_endpoint_name": 7,
        "state": 9,
    },
    connection_pb2.ConnectionEvent: {"type": 1, "connections": 2},
    connection_pb2.MonitorScopeSelector: {"path_segments": 1},
    connectioncontext_pb2.IpNeighbor: {"ip": 1, "hardware_address": 2},
    connectioncontext_pb2.Route: {"prefix": 1},
    connectioncontext_pb2.IpFamily: {"family": 1},
    connectioncontext_pb2.ExtraPrefixRequest: {
        "addr_family": 1,
        "prefix_len": 2,
        "required_number": 3,
        "requested_number": 4,
    },
    connectioncontext_pb2.IPContext: {
        "src_ip_addr": 1,
        "dst_ip_addr": 2,
        "src_ip_required": 3,
        "dst_ip_required": 4,
        "src_routes": 5,
        "dst_routes": 6,
        "excluded_prefixes": 7,
        "ip_neighbors": 8,
        "extra_prefix_request": 9,
        "extra_prefixes": 10,
    },
    connectioncontext_pb2.DNSConfig: {"dns_server_ips": 1, "search_domains": 2},
    connectioncontext_pb2.DNSContext: {"configs": 1},
    connectioncontext_pb2.EthernetContext: {"src_mac": 1, "dst_mac": 2},
    connectioncontext_pb2.ConnectionContext: {
        "ip_context": 1,
        "dns_context": 2,
        "ethernet_context": 3,
        "extra_context": 4,
    },
}


@pytest.mark.parametrize("msg", list(FIELDS), ids=lambda m: m.DESCRIPTOR.full_name)
def test_wire_field_numbers(msg: type) -> None:
    fields = {f.name: f.number for f in msg.DESCRIPTOR.fields}  # type: ignore[attr-defined]
    assert fields == FIELDS[msg]


def test_wire_packages_and_services() -> None:
    services = {
        s.full_name: [m.name for m in s.methods]
        for mod in (forwarder_pb2, forwarderregistrar_pb2, crossconnect_pb2)
        for s in mod.DESCRIPTOR.services_by_name.values()
    }
    assert services == {
        "forwarder.Forwarder": ["Request", "Close"],
        "forwarder.MechanismsMonitor": ["MonitorMechanisms"],
        "forwarderregistrar.ForwarderRegistration": [
            "RequestForwarderRegistration",
            "RequestLiveness",
        ],
        "forwarderregistrar.ForwarderUnRegistration": ["RequestForwarderUnRegistration"],
        "crossconnect.MonitorCrossConnect": ["MonitorCrossConnects"],
    }
    assert crossconnect_pb2.INITIAL_STATE_TRANSFER == 0
    assert crossconnect_pb2.UPDATE == 1 and crossconnect_pb2.DELETE == 2
    assert connection_pb2.UP == 0 and connection_pb2.DOWN == 1

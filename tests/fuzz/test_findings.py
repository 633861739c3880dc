"""What the fuzzer found, one regression test each, over the real gRPC socket: each request
gets a client-error status with a short message, and leaves nothing behind."""

from __future__ import annotations

import grpc
import pytest

from nsm_forwarder.proto import crossconnect_pb2
from tests.conftest import Node
from tests.fuzz.harness import REQUEST
from tests.fuzz.state import kernel_sets, reported
from tests.helpers import IS_ROOT, Pod, Pods, local_xcon

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root (network namespaces)")


def refused(node: Node, xcon: crossconnect_pb2.CrossConnect) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        node.forwarder.stub().Request(xcon, timeout=30)
    assert kernel_sets(node.forwarder.name) == {}
    assert xcon.id not in reported(node.forwarder)
    return err.value.code(), err.value.details() or ""


def bad(a: Pod, b: Pod, xid: str = "found-1", **params: str) -> crossconnect_pb2.CrossConnect:
    xcon = local_xcon(xid, a, b)
    xcon.source.mechanism.parameters.update(params)
    return xcon


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"netnsInode": str(2**64)}, "must be a decimal inode number in 1..18446744073709551615"),
        ({"netnsInode": str(2**70)}, "must be a decimal inode number"),
        ({"netnsInode": "9" * 5000}, "(5000 characters)"),
        ({"netnsInode": "\u0663"}, "must be a decimal inode number"),  # a digit, not ASCII
        ({"name": "eth%d"}, "must not contain '/', ':', '%'"),  # the kernel would number it
        ({"name": "a\0b"}, "must be printable ASCII"),
        ({"name": "y" * 14000}, "is 14000 bytes, the limit is 15"),
    ],
    ids=[
        "inode-2^64",
        "inode-2^70",
        "inode-5000-digits",
        "inode-arabic-digit",
        "name-%d",
        "name-NUL",
        "name-14KB",
    ],
)
def test_found_bad_end_parameters_are_invalid_argument(
    node: Node, module_pods: Pods, params: dict[str, str], says: str
) -> None:
    a, b = module_pods.make(), module_pods.make()
    code, details = refused(node, bad(a, b, **params))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert says in details
    assert len(details) <= 1100  # a status message travels as a header: kept short


@pytest.mark.parametrize(
    ("xid", "says"),
    [
        ("a\0b", "contains control"),
        ("x" * 300, "is 300 bytes, the limit is 128"),
        ("a\u202eb", "non-printable"),
    ],
    ids=["NUL", "300-bytes", "bidi-override"],
)
def test_found_bad_ids_are_invalid_argument(
    node: Node, module_pods: Pods, xid: str, says: str
) -> None:
    """An id is part of every interface's tag: one the kernel would cut (a NUL) or refuse (too
    long for an alias) must not get as far as the kernel."""
    a, b = module_pods.make(), module_pods.make()
    code, details = refused(node, bad(a, b, xid=xid))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and says in details


@pytest.mark.parametrize(
    "raw",
    [b"\x00", b"\x0a\x03\xff\xfe\xfd", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x02\x0a"],
    ids=["zero-tag", "bad-utf8", "length-past-end", "truncated"],
)
def test_found_corrupt_messages_are_invalid_argument(node: Node, raw: bytes) -> None:
    """Bytes that are no CrossConnect: INVALID_ARGUMENT (gRPC's own decoding said UNKNOWN)."""
    with node.forwarder.channel() as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary(REQUEST)(raw, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a crossconnect.CrossConnect message" in (err.value.details() or "")

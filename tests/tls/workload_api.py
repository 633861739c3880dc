"""A protocol-level SPIFFE Workload API for tests, and the certificates it serves.

- ``Authority(trust_domain)``: a CA minted with ``cryptography``; ``svid(spiffe_id)`` issues an
  X509-SVID (EC P-256 key, the SPIFFE ID as the only URI SAN, no DNS SAN and no CN, like SPIRE's).
- ``WorkloadApi(path, svid)``: the SpiffeWorkloadAPI service (py-spiffe's generated stubs of the
  public workload.proto) on a unix socket; ``FetchX509SVID`` streams the current SVID and every
  later one given to ``push()``. Like a SPIRE agent it refuses calls without the
  ``workload.spiffe.io: true`` header. One socket per workload: a real agent tells callers apart
  by attesting their process; the tests give each workload its own socket instead.
"""

from __future__ import annotations

import datetime
import os
import threading
import warnings
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

with warnings.catch_warnings():  # py-spiffe's JWT module names DSA, which is deprecated
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    from spiffe._proto import workload_pb2, workload_pb2_grpc


@dataclass(frozen=True)
class Svid:
    spiffe_id: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    authority: Authority

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def chain_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, directory: str, name: str) -> tuple[str, str, str]:
        """Write chain, key and bundle PEM files; return their paths."""
        paths = tuple(os.path.join(directory, f"{name}.{ext}") for ext in ("crt", "key", "ca"))
        for path, data in zip(
            paths, (self.chain_pem, self.key_pem, self.authority.pem), strict=True
        ):
            with open(path, "wb") as f:
                f.write(data)
        return paths  # type: ignore[return-value]


class Authority:
    """A trust domain's CA."""

    def __init__(self, trust_domain: str = "example.org") -> None:
        self.trust_domain = trust_domain
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"test CA {trust_domain}")])
        self.name = name
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def svid(self, path: str) -> Svid:
        """An X509-SVID for ``spiffe://<trust domain><path>``."""
        spiffe_id = f"spiffe://{self.trust_domain}{path}"
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, True, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return Svid(spiffe_id, cert, key, self)


def _response(svid: Svid) -> workload_pb2.X509SVIDResponse:
    der = serialization.Encoding.DER
    return workload_pb2.X509SVIDResponse(
        svids=[
            workload_pb2.X509SVID(
                spiffe_id=svid.spiffe_id,
                x509_svid=svid.cert.public_bytes(der),
                x509_svid_key=svid.key.private_bytes(
                    der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
                bundle=svid.authority.cert.public_bytes(der),
            )
        ]
    )


class WorkloadApi(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    """The Workload API on ``path`` serving ``svid``; ``push()`` rotates; ``stop()`` at the end."""

    def __init__(self, path: str, svid: Svid) -> None:
        self.path = path
        self.endpoint = "unix://" + path
        self._svid = svid
        self._changed = threading.Condition()
        self._stopped = False
        self.calls = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(self, self._server)
        self._server.add_insecure_port(self.endpoint)
        self._server.start()

    def push(self, svid: Svid) -> None:
        """Send ``svid`` on every open stream (and to every later caller)."""
        with self._changed:
            self._svid = svid
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._server.stop(None).wait(5)
        if os.path.exists(self.path):
            os.unlink(self.path)

    def FetchX509SVID(
        self, request: workload_pb2.X509SVIDRequest, context: grpc.ServicerContext
    ) -> Iterator[workload_pb2.X509SVIDResponse]:
        if dict(context.invocation_metadata()).get("workload.spiffe.io") != "true":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")
        self.calls += 1
        sent: Svid | None = None
        while context.is_active():
            with self._changed:
                if self._stopped:
                    return
                if sent is self._svid:
                    self._changed.wait(0.2)
                    continue
                sent = self._svid
            yield _response(sent)

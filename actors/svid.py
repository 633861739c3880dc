"""Where this process's X.509 identity comes from: the SPIFFE Workload API, or files.

- ``Identity``: one certificate chain, its private key and the trust bundle (all PEM), with the
  SPIFFE ID of the leaf (its URI SAN) and a version that grows with every new identity.
- ``WorkloadApiSource(endpoint)``: X509-SVIDs streamed by the SPIFFE Workload API (the SPIRE
  agent) through py-spiffe's ``WorkloadApiClient``; each new SVID on the stream replaces the
  current one (rotation without a restart). A missing agent socket is one ERROR line, then the
  source polls for the socket and connects when it appears; a stream that fails is logged and
  reconnected, never fatal.
- ``FileSource(cert, key, ca)``: PEM files (clusters without SPIRE); re-read whenever one of them
  changes (size or modification time), checked at most once a second.
Both answer ``current()`` (the Identity, or ``NotReady``) from any thread: gRPC calls it from its
own threads during handshakes.
Threads:  WorkloadApiSource runs one daemon thread (py-spiffe's stream runs in it); FileSource
          none.
Never logs a private key.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

log = logging.getLogger(__name__)

SOCKET_POLL_INTERVAL = 0.5
"""Seconds between two looks for a missing Workload API socket."""

RECONNECT_DELAY = 1.0
"""Seconds before a failed Workload API stream is opened again."""


class NotReady(Exception):
    """No identity yet (the Workload API has not sent an SVID, or a file cannot be read)."""


@dataclass(frozen=True)
class Identity:
    """Identity - PEM chain (leaf first), PEM private key, PEM trust bundle, leaf SPIFFE ID."""

    chain: bytes
    key: bytes
    bundle: bytes
    spiffe_id: str
    version: int

    def __repr__(self) -> str:  # never the key
        return f"Identity({self.spiffe_id or '(no SPIFFE ID)'}, version {self.version})"


def spiffe_id_of(cert: x509.Certificate) -> str:
    """The certificate's spiffe:// URI SAN, or "" when it has none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    return spiffe[0] if len(spiffe) == 1 else ""


def describe(cert: x509.Certificate) -> str:
    """``<SPIFFE ID> serial <hex>, valid until <time>`` for the log."""
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    name = spiffe_id_of(cert) or cert.subject.rfc4514_string()
    return f"{name} serial {cert.serial_number:x}, valid until {until}"


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def endpoint_path(endpoint: str) -> str:
    """The socket path of a ``unix:`` Workload API address (a bare path is accepted too)."""
    if endpoint.startswith("unix:"):
        parsed = urlparse(endpoint)
        return "/" + parsed.path.lstrip("/")
    if endpoint.startswith("/"):
        return endpoint
    raise ValueError(f"the SPIFFE Workload API address must be unix:///<path>, not {endpoint!r}")


class WorkloadApiSource:
    """WorkloadApiSource - the current X509-SVID of the SPIFFE Workload API at ``endpoint``.

    ``start()`` launches the watcher thread; ``current()`` answers from any thread;
    ``wait(timeout)`` blocks until the first SVID; ``close()`` stops the thread.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.path = endpoint_path(endpoint)
        self._lock = threading.Lock()
        self._identity: Identity | None = None
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._cancel: object | None = None
        self.last_error = ""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="spiffe-workload-api", daemon=True
            )
            self._thread.start()

    def current(self) -> Identity:
        with self._lock:
            if self._identity is None:
                raise NotReady(
                    f"no X509-SVID yet from the SPIFFE Workload API at {self.endpoint}"
                    + (f" ({self.last_error})" if self.last_error else "")
                )
            return self._identity

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the first SVID (True) or ``timeout`` seconds (False)."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        cancel = self._cancel
        if cancel is not None:
            cancel.cancel()  # type: ignore[attr-defined]

    # --- the watcher thread ---------------------------------------------------------------

    def _run(self) -> None:
        with warnings.catch_warnings():  # py-spiffe's JWT module names DSA, which is deprecated
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            from spiffe import WorkloadApiClient

        missing_said = False
        while not self._closed.is_set():
            if not os.path.exists(self.path):
                if not missing_said:
                    log.error(
                        "SPIFFE Workload API socket %s does not exist (is the SPIRE agent running "
                        "and its socket mounted? SPIFFE_ENDPOINT_SOCKET sets another one); "
                        "waiting for it",
                        self.path,
                    )
                    missing_said = True
                self.last_error = f"its socket {self.path} does not exist"
                self._closed.wait(SOCKET_POLL_INTERVAL)
                continue
            if missing_said:
                log.info("SPIFFE Workload API socket %s appeared; connecting", self.path)
                missing_said = False
            ended = threading.Event()

            def on_error(err: Exception, ended: threading.Event = ended) -> None:
                self._on_error(err, ended)

            try:
                client = WorkloadApiClient("unix://" + self.path)
            except Exception as err:  # the socket vanished between the look and the dial
                self.last_error = str(err)
                self._closed.wait(SOCKET_POLL_INTERVAL)
                continue
            try:
                self._cancel = client.stream_x509_contexts(self._on_context, on_error)
                while not (self._closed.is_set() or ended.is_set()):
                    self._closed.wait(0.2)
            finally:
                if self._cancel is not None:
                    self._cancel.cancel()  # type: ignore[attr-defined]
                    self._cancel = None
                client.close()
            if not self._closed.is_set():
                self._closed.wait(RECONNECT_DELAY)

    def _on_context(self, context: object) -> None:
        svid = context.default_svid  # type: ignore[attr-defined]
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(  # type: ignore[attr-defined]
            svid.spiffe_id.trust_domain
        )
        authorities: list[x509.Certificate] = []
        for item in context.x509_bundle_set.bundles:  # type: ignore[attr-defined]
            authorities += list(item.x509_authorities)
        if bundle is None or not authorities:
            self._on_error(ValueError("the SVID's trust domain has no bundle"), None)
            return
        key = svid.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with self._lock:
            version = self._identity.version + 1 if self._identity else 1
            self._identity = Identity(
                _pem(list(svid.cert_chain)), key, _pem(authorities), str(svid.spiffe_id), version
            )
        self.last_error = ""
        log.info("X509-SVID from the SPIFFE Workload API: %s", describe(svid.leaf))
        self._ready.set()

    def _on_error(self, err: Exception, ended: threading.Event | None) -> None:
        self.last_error = str(err)
        if not self._closed.is_set():
            log.warning(
                "SPIFFE Workload API at %s: %s; reconnecting in %.0f s",
                self.endpoint,
                err,
                RECONNECT_DELAY,
            )
        if ended is not None:
            ended.set()


class FileSource:
    """FileSource - the identity in PEM files ``cert`` (chain, leaf first), ``key`` and ``ca``
    (trust bundle); re-read when one of them changes."""

    CHECK_INTERVAL = 1.0

    def __init__(self, cert: str, key: str, ca: str) -> None:
        self.paths = (cert, key, ca)
        self._lock = threading.Lock()
        self._identity: Identity | None = None
        self._stamp: tuple[tuple[int, int], ...] = ()
        self._checked = 0.0
        self.last_error = ""

    def start(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> bool:
        try:
            self.current()
        except NotReady:
            return False
        return True

    def close(self) -> None:
        pass

    def current(self) -> Identity:
        with self._lock:
            now = time.monotonic()
            if self._identity is None or now - self._checked >= self.CHECK_INTERVAL:
                self._checked = now
                self._reload()
            if self._identity is None:
                raise NotReady(f"cannot load the TLS files: {self.last_error}")
            return self._identity

    def _reload(self) -> None:
        try:
            stamp = tuple((st.st_size, st.st_mtime_ns) for st in map(os.stat, self.paths))
            if stamp == self._stamp and self._identity is not None:
                return
            chain, key, bundle = (open(p, "rb").read() for p in self.paths)
            certs = x509.load_pem_x509_certificates(chain)
            serialization.load_pem_private_key(key, None)  # fail here, not in a handshake
            x509.load_pem_x509_certificates(bundle)
        except (OSError, ValueError, TypeError) as err:
            self.last_error = f"{type(err).__name__}: {err}"
            if self._identity is not None:
                log.warning("TLS files: %s; keeping the identity loaded before", self.last_error)
            return
        version = self._identity.version + 1 if self._identity else 1
        self._identity = Identity(chain, key, bundle, spiffe_id_of(certs[0]), version)
        self._stamp = stamp
        self.last_error = ""
        log.info("TLS identity from %s: %s", self.paths[0], describe(certs[0]))

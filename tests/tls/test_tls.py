"""mTLS end to end: a real forwarder process, the registrar stand-in (nsmd) and the CLI, with
X509-SVIDs from protocol-level Workload APIs (one socket per workload) or from files."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import pytest
from cryptography import x509

from nsm_forwarder.actors.tls import INSECURE_WARNING, TlsSettings, Transport
from tests.conftest import Node, needs_root
from tests.helpers import BackgroundLoop, wait_until
from tests.tls.workload_api import Authority, Svid, WorkloadApi

pytestmark = needs_root  # a real forwarder (its workers need namespaces)


class Mesh:
    """One trust domain: its CA and a Workload API socket per workload."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.ca = Authority("example.org")
        self.apis: list[WorkloadApi] = []
        self.transports: list[Transport] = []

    def api(self, name: str, svid: Svid) -> WorkloadApi:
        api = WorkloadApi(os.path.join(self.node.workdir, f"{name}-agent.sock"), svid)
        self.apis.append(api)
        return api

    def registrar(self, settings: TlsSettings) -> None:
        """Start the node's registrar stand-in over mTLS with ``settings``."""
        transport = Transport(settings, what="nsmd stand-in")
        self.transports.append(transport)
        assert self.node.loop.run(transport.start(timeout=10))
        self.node.start_registrar(transport=transport)

    def close(self) -> None:
        self.node.close()
        for transport in self.transports:
            self.node.loop.run(transport.close())
        for api in self.apis:
            api.stop()


@pytest.fixture
def mesh(bg_loop: BackgroundLoop, node_factory: type) -> Iterator[Mesh]:
    made = Mesh(node_factory(INSECURE="false"))
    try:
        yield made
    finally:
        made.close()


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    prefixes = ("NSM_", "FORWARDER_", "INSECURE", "SPIFFE_")
    full = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "nsm_forwarder.tools.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def spiffe_env(api: WorkloadApi) -> dict[str, str]:
    return {"INSECURE": "false", "SPIFFE_ENDPOINT_SOCKET": api.endpoint}


def served_certificate(path: str, client: Svid | None, bundle: bytes) -> x509.Certificate:
    """Connect to the unix socket ``path`` over TLS; return the server's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=bundle.decode())
    context.set_alpn_protocols(["h2"])
    if client is not None:
        with tempfile.TemporaryDirectory() as tmp:
            chain, key, _ = client.write(tmp, "client")
            context.load_cert_chain(chain, key)
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(path)
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_handshake_forwarder_registrar_cli_over_spiffe_svids(mesh: Mesh) -> None:
    fwd = mesh.node.forwarder
    forwarder_api = mesh.api("forwarder", mesh.ca.svid("/forwarder"))
    nsmd_api = mesh.api("nsmd", mesh.ca.svid("/nsmd"))
    cli_api = mesh.api("cli", mesh.ca.svid("/cli"))
    fwd.env["SPIFFE_ENDPOINT_SOCKET"] = forwarder_api.endpoint
    mesh.registrar(TlsSettings(insecure=False, endpoint=nsmd_api.endpoint))
    fwd.start()
    mesh.node.wait_registered()  # nsmd dialled the forwarder over mTLS: MonitorMechanisms runs
    assert mesh.node.registrar.peers[-1] == "spiffe://example.org/forwarder"
    listed = run_cli("list", "--json", "--socket", fwd.socket, env=spiffe_env(cli_api))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "{}"
    assert stat.S_IMODE(os.stat(fwd.socket).st_mode) == 0o660
    log = fwd.log()
    assert INSECURE_WARNING not in log
    assert "transport: mTLS with identities from the SPIFFE Workload API" in log


def test_a_client_without_certificate_is_refused(mesh: Mesh) -> None:
    fwd = mesh.node.forwarder
    fwd.env["SPIFFE_ENDPOINT_SOCKET"] = mesh.api("forwarder", mesh.ca.svid("/fwd")).endpoint
    fwd.start(wait=True)
    plaintext = run_cli("list", "--socket", fwd.socket, env={"INSECURE": "true"})
    assert plaintext.returncode == 1
    assert "list failed: UNAVAILABLE" in plaintext.stderr
    # TLS without a client certificate: the server ends the connection at the handshake
    with pytest.raises((ssl.SSLError, ConnectionError)):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(cadata=mesh.ca.pem.decode())
        context.set_alpn_protocols(["h2"])
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(fwd.socket)
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if tls.recv(1024) == b"":
                    raise ConnectionError("closed by the server")
    # a certificate of another trust domain's CA does not chain to the bundle
    stranger = Authority("elsewhere.org")
    foreign = mesh.api("foreign", stranger.svid("/cli"))
    refused = run_cli("list", "--socket", fwd.socket, env=spiffe_env(foreign))
    assert refused.returncode == 1
    assert "list failed: UNAVAILABLE" in refused.stderr


def test_allow_list_refuses_a_foreign_spiffe_id(mesh: Mesh) -> None:
    fwd = mesh.node.forwarder
    fwd.env.update(
        SPIFFE_ENDPOINT_SOCKET=mesh.api("forwarder", mesh.ca.svid("/forwarder")).endpoint,
        NSM_FORWARDER_TLS_ALLOWED_IDS="spiffe://example.org/nsmd, spiffe://example.org/cli",
    )
    nsmd_api = mesh.api("nsmd", mesh.ca.svid("/nsmd"))
    mesh.registrar(
        TlsSettings(
            insecure=False,
            endpoint=nsmd_api.endpoint,
            allowed_ids="spiffe://example.org/forwarder",
        )
    )
    fwd.start()
    mesh.node.wait_registered()
    allowed = run_cli(
        "list", "--socket", fwd.socket, env=spiffe_env(mesh.api("cli", mesh.ca.svid("/cli")))
    )
    assert allowed.returncode == 0, allowed.stderr
    intruder = mesh.api("intruder", mesh.ca.svid("/intruder"))
    refused = run_cli("list", "--socket", fwd.socket, env=spiffe_env(intruder))
    assert refused.returncode == 1
    assert (
        "list failed: PERMISSION_DENIED: peer SPIFFE ID spiffe://example.org/intruder is not "
        "allowed" in refused.stderr
    )
    assert "refused an RPC from peer SPIFFE ID spiffe://example.org/intruder" in fwd.log()
    # the dialing side checks too: a CLI that only accepts another server ID refuses this one
    picky = {
        **spiffe_env(mesh.api("cli2", mesh.ca.svid("/cli"))),
        "NSM_FORWARDER_TLS_ALLOWED_IDS": "spiffe://example.org/someone-else",
    }
    refused = run_cli("list", "--socket", fwd.socket, env=picky)
    assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr


def test_a_rotated_svid_is_used_without_a_restart(mesh: Mesh) -> None:
    fwd = mesh.node.forwarder
    forwarder_api = mesh.api("forwarder", mesh.ca.svid("/forwarder"))
    fwd.env["SPIFFE_ENDPOINT_SOCKET"] = forwarder_api.endpoint
    mesh.registrar(
        TlsSettings(insecure=False, endpoint=mesh.api("nsmd", mesh.ca.svid("/nsmd")).endpoint)
    )
    fwd.start()
    mesh.node.wait_registered()
    client = mesh.ca.svid("/cli")
    first = served_certificate(fwd.socket, client, mesh.ca.pem)
    rotated = mesh.ca.svid("/forwarder-rotated")
    forwarder_api.push(rotated)
    # serving side: new connections get the new certificate
    wait_until(
        lambda: served_certificate(fwd.socket, client, mesh.ca.pem).serial_number == rotated.serial,
        20,
        "the rotated SVID served",
    )
    assert first.serial_number != rotated.serial
    # dialing side: after nsmd "restarts", the forwarder registers presenting the new SVID
    mesh.node.registrar.break_liveness()
    wait_until(
        lambda: mesh.node.registrar.peers[-1:] == ["spiffe://example.org/forwarder-rotated"],
        20,
        "a registration with the rotated SVID",
    )
    assert fwd.proc is not None and fwd.proc.poll() is None
    assert (
        "X509-SVID from the SPIFFE Workload API: spiffe://example.org/forwarder-rotated"
        in fwd.log()
    )


def readiness(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readiness", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_a_missing_agent_socket_is_one_error_then_a_wait(mesh: Mesh) -> None:
    fwd = mesh.node.forwarder
    late = os.path.join(mesh.node.workdir, "late-agent.sock")
    fwd.env["SPIFFE_ENDPOINT_SOCKET"] = "unix://" + late
    mesh.registrar(
        TlsSettings(insecure=False, endpoint=mesh.api("nsmd", mesh.ca.svid("/nsmd")).endpoint)
    )
    fwd.start(wait=False)
    line = f"SPIFFE Workload API socket {late} does not exist"
    wait_until(lambda: line in fwd.log(), 30, "the missing-socket error")
    port = fwd.health_port()
    assert readiness(port) == 503
    time.sleep(2)  # let it look for the socket a few more times (every 0.5 s)
    assert fwd.proc is not None and fwd.proc.poll() is None
    assert fwd.log().count(line) == 1
    assert not fwd.accepts()
    mesh.apis.append(WorkloadApi(late, mesh.ca.svid("/forwarder")))
    wait_until(fwd.accepts, 30, "the forwarder socket")
    mesh.node.wait_registered()
    assert readiness(port) == 200
    log = fwd.log()
    assert log.count(line) == 1 and f"{late} appeared; connecting" in log


def test_file_based_mode(mesh: Mesh) -> None:
    fwd = mesh.node.forwarder
    work = mesh.node.workdir
    cert, key, ca = mesh.ca.svid("/forwarder").write(work, "forwarder")
    fwd.env.update(
        NSM_FORWARDER_TLS_CERT_FILE=cert,
        NSM_FORWARDER_TLS_KEY_FILE=key,
        NSM_FORWARDER_TLS_CA_FILE=ca,
    )
    n_cert, n_key, n_ca = mesh.ca.svid("/nsmd").write(work, "nsmd")
    mesh.registrar(TlsSettings(insecure=False, cert_file=n_cert, key_file=n_key, ca_file=n_ca))
    fwd.start()
    mesh.node.wait_registered()
    assert mesh.node.registrar.peers[-1] == "spiffe://example.org/forwarder"
    c_cert, c_key, c_ca = mesh.ca.svid("/cli").write(work, "cli")
    env = {
        "INSECURE": "false",
        "NSM_FORWARDER_TLS_CERT_FILE": c_cert,
        "NSM_FORWARDER_TLS_KEY_FILE": c_key,
        "NSM_FORWARDER_TLS_CA_FILE": c_ca,
    }
    listed = run_cli("list", "--socket", fwd.socket, env=env)
    assert listed.returncode == 0, listed.stderr
    # new files are picked up by new connections
    renewed = mesh.ca.svid("/forwarder")
    renewed.write(work, "forwarder")
    client = mesh.ca.svid("/cli")
    wait_until(
        lambda: served_certificate(fwd.socket, client, mesh.ca.pem).serial_number == renewed.serial,
        20,
        "the renewed certificate served",
    )
    assert "transport: mTLS with identities from files" in fwd.log()


def test_insecure_true_serves_plaintext_with_one_warning(node_factory: type) -> None:
    node: Node = node_factory()  # INSECURE=true, as every other test
    node.start()
    listed = run_cli("list", "--socket", node.forwarder.socket, env={"INSECURE": "true"})
    assert listed.returncode == 0, listed.stderr
    log = node.forwarder.log()
    assert log.count(INSECURE_WARNING) == 1
    assert stat.S_IMODE(os.stat(node.forwarder.socket).st_mode) == 0o660


def test_sigterm_while_waiting_for_the_agent_is_a_clean_stop(mesh: Mesh) -> None:
    fwd = mesh.node.forwarder
    late = os.path.join(mesh.node.workdir, "never-agent.sock")
    fwd.env["SPIFFE_ENDPOINT_SOCKET"] = "unix://" + late
    fwd.start(wait=False)
    wait_until(lambda: f"socket {late} does not exist" in fwd.log(), 30, "the error line")
    assert fwd.terminate() == 0
    assert "start-up interrupted" in fwd.log()


def test_cli_without_an_agent_fails_with_one_line(mesh: Mesh) -> None:
    missing = os.path.join(mesh.node.workdir, "no-agent.sock")
    env = {"INSECURE": "false", "SPIFFE_ENDPOINT_SOCKET": "unix://" + missing}
    done = run_cli("list", "--timeout", "1", "--socket", mesh.node.forwarder.socket, env=env)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"nsm-forwarder: list failed: UNAVAILABLE: no TLS identity within 1s: its socket "
        f"{missing} does not exist"
    ]

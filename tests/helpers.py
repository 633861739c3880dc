"""Shared test machinery: pod namespaces, a registrar stand-in on a background loop, and a real
forwarder process (``nsm-forwarder run``) with a gRPC client over its unix socket."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from nsm_forwarder.proto import (
    connection_pb2,
    connectioncontext_pb2,
    crossconnect_pb2,
    crossconnect_pb2_grpc,
    forwarder_pb2_grpc,
)
from nsm_forwarder.tools.registrar_server import RegistrarServer

T = TypeVar("T")
_counter = itertools.count(1)
IS_ROOT = os.geteuid() == 0


def unique(prefix: str) -> str:
    """A short name unique to this test process (fits interface and netns name limits)."""
    return f"{prefix}{os.getpid() % 10000}x{next(_counter)}"


#: Stretches every wait_until timeout and ping's wait for a reply. The tests run inside the
#: software-emulated VM of tests/vm set it, as everything there is tens of times slower.
TIME_FACTOR = float(os.environ.get("NSM_TEST_TIME_FACTOR", "1"))


def sh(*cmd: str, check: bool = True) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Pod:
    name: str

    @property
    def inode(self) -> int:
        return os.stat(f"/var/run/netns/{self.name}").st_ino

    def links(self) -> list[str]:
        """Names of every link in the pod except lo."""
        out = sh("ip", "-n", self.name, "-o", "link", "show")
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
        return [n for n in names if n != "lo"]

    def ping(self, ip: str, count: int = 1) -> bool:
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.name,
                "ping",
                "-c",
                str(count),
                "-i",
                "0.2",
                "-W",
                f"{TIME_FACTOR:g}",  # seconds to wait for the last reply
                ip,
            ],
            capture_output=True,
        )
        return done.returncode == 0

    def ping_over_tunnel(self, ip: str) -> bool:
        """Ping until the first reply, for up to three WireGuard handshake rounds.

        Both ends of a new WireGuard tunnel start a handshake when their device comes up (a
        persistent keepalive is set). When the two initiations cross, each end answers the
        other's and then rejects the response to its own, and both retry after 5 s plus a random
        jitter of up to a third of a second, so a few rounds can go by before one wins. That is
        WireGuard's design, not a fault; it showed as a failed 3-ping check about once in eight
        runs in the emulated VM, where the handshake's crypto is slow."""
        deadline = 16 + TIME_FACTOR
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, "ping", "-c", "1", "-i", "0.2"]
            + ["-w", f"{deadline:g}", ip],
            capture_output=True,
        )
        return done.returncode == 0

    def ip(self, *args: str) -> str:
        return sh("ip", "-n", self.name, *args)


class Pods:
    """Creates pod namespaces on demand and deletes all of them at teardown."""

    def __init__(self) -> None:
        self.made: list[Pod] = []

    def make(self) -> Pod:
        pod = Pod(unique("nft"))
        sh("ip", "netns", "add", pod.name)
        self.made.append(pod)
        return pod

    def cleanup(self) -> None:
        for pod in self.made:
            subprocess.run(["ip", "netns", "del", pod.name], capture_output=True)
        self.made.clear()


class BackgroundLoop:
    """An asyncio loop in a thread, for running async servers beside sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def wait_until(predicate: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    timeout *= TIME_FACTOR
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


@dataclass
class Forwarder:
    """A real ``nsm-forwarder run`` process plus clients for its API."""

    workdir: str
    name: str
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    #: run the forwarder inside this named network namespace (a "node"), if set
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return os.path.join(self.workdir, "forwarder.sock")

    @property
    def registrar_socket(self) -> str:
        return os.path.join(self.workdir, "registrar.sock")

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "forwarder.log")

    def start(self, wait: bool = True) -> None:
        """Start the process; with ``wait``, until its socket accepts connections."""
        env = dict(os.environ)
        env.update(
            FORWARDER_NAME=self.name,
            FORWARDER_SOCKET=self.socket,
            FORWARDER_REGISTRAR_SOCKET=self.registrar_socket,
            NSM_BASEDIR=self.workdir,
            NSM_FORWARDER_SRC_IP="127.0.0.1",
            INSECURE="true",
            NSM_FORWARDER_HEALTH_PORT="0",
            NSM_FORWARDER_HEALTH_HOST="127.0.0.1",
            NSM_FORWARDER_REREGISTER_INTERVAL="200ms",
            NSM_FORWARDER_LOG_LEVEL="DEBUG",
        )
        if TIME_FACTOR != 1:  # in the emulated VM: the forwarder's own deadlines stretch too
            env["NSM_FORWARDER_OPERATION_TIMEOUT"] = f"{10 * TIME_FACTOR:g}s"
            env["NSM_FORWARDER_REGISTRAR_TIMEOUT"] = f"{5 * TIME_FACTOR:g}s"
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "nsm_forwarder.tools.cli", "run", *self.args],
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        proc = self.proc
        if not wait:
            return
        wait_until(lambda: self.accepts() or proc.poll() is not None, 30, "the socket")
        if proc.poll() is not None:
            raise AssertionError(f"forwarder exited at start:\n{self.log()}")

    def health_port(self) -> int:
        """The port of the HTTP probes, from the start-up log (the tests configure port 0)."""
        match = re.search(r"health probes on http://[^:]+:(\d+)", self.log())
        assert match, "no probes line in the forwarder log"
        return int(match.group(1))

    def accepts(self) -> bool:
        """True when the forwarder socket accepts connections (not just a stale file)."""
        import socket

        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(self.socket)
            except OSError:
                return False
        return True

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel("unix://" + self.socket)

    def stub(self) -> forwarder_pb2_grpc.ForwarderStub:
        return forwarder_pb2_grpc.ForwarderStub(self.channel())

    def xcon_monitor(self) -> crossconnect_pb2_grpc.MonitorCrossConnectStub:
        return crossconnect_pb2_grpc.MonitorCrossConnectStub(self.channel())

    def worker_pids(self) -> list[int]:
        """The worker processes: children of the zygote (a child of the main process), or
        children of the main process itself when it spawned them without a zygote."""
        assert self.proc is not None
        found = []
        for pid in _children(self.proc.pid):
            if _is_zygote(pid):
                found += _children(pid)
            else:
                found.append(pid)
        return found

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _children(pid: int) -> list[int]:
    return [int(p) for p in sh("pgrep", "-P", str(pid), check=False).split()]


def _is_zygote(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"nsm_forwarder.actors.zygote" in f.read()
    except OSError:
        return False


def new_workdir() -> str:
    return tempfile.mkdtemp(prefix="nft-", dir="/tmp")


def start_registrar(loop: BackgroundLoop, path: str, **kw: Any) -> RegistrarServer:
    server = RegistrarServer(path, **kw)
    loop.run(server.start())
    return server


def end(
    conn_id: str, name: str, inode: int, ns: str = "svc", mech: str = "KERNEL_INTERFACE"
) -> connection_pb2.Connection:
    return connection_pb2.Connection(
        id=conn_id,
        network_service=ns,
        mechanism=connection_pb2.Mechanism(
            type=mech, parameters={"name": name, "netnsInode": str(inode)}
        ),
    )


def local_xcon(
    xcon_id: str,
    src: Pod,
    dst: Pod,
    src_name: str = "nsm0",
    dst_name: str = "nsm0",
    src_ip: str = "10.30.1.1/30",
    dst_ip: str = "10.30.1.2/30",
    **ip_context: Any,
) -> crossconnect_pb2.CrossConnect:
    """A local KERNEL_INTERFACE cross-connect shaped like nsmd's (one shared ip_context)."""
    ctx = connectioncontext_pb2.ConnectionContext(
        ip_context=connectioncontext_pb2.IPContext(
            src_ip_addr=src_ip, dst_ip_addr=dst_ip, **ip_context
        )
    )
    source = end(f"{xcon_id}-src", src_name, src.inode)
    destination = end(f"{xcon_id}-dst", dst_name, dst.inode)
    source.context.CopyFrom(ctx)
    destination.context.CopyFrom(ctx)
    return crossconnect_pb2.CrossConnect(
        id=xcon_id, payload="IP", source=source, destination=destination
    )


# --- two-node test bed (remote cross-connects) --------------------------------------------------

_subnets = itertools.count(os.getpid() % 200)


@dataclass
class Underlay:
    """Two node namespaces joined by a veth pair: each with its own address and a default route
    via the other (``a_ip`` / ``b_ip`` without prefix length)."""

    a: str
    b: str
    a_ip: str
    b_ip: str
    prefixlen: int

    def delete(self) -> None:
        for name in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def make_underlay(v6: bool = False) -> Underlay:
    """A fresh :class:`Underlay` (unique names, a /24 or /64 of its own); the caller deletes it.

    IPv4 172.31.N.1/24 and .2/24, or IPv6 fd31:0:0:N::1/64 and ::2/64 (no DAD wait).
    """
    n = next(_subnets) % 250 + 1
    a, b = unique("nfa"), unique("nfb")
    if v6:
        a_ip, b_ip, plen = f"fd31:0:0:{n:x}::1", f"fd31:0:0:{n:x}::2", 64
    else:
        a_ip, b_ip, plen = f"172.31.{n}.1", f"172.31.{n}.2", 24
    bed = Underlay(a, b, a_ip, b_ip, plen)
    try:
        for name in (a, b):
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "link", "add", "ul0", "netns", a, "type", "veth", "peer", "ul0", "netns", b)
        for name, ip, peer in ((a, a_ip, b_ip), (b, b_ip, a_ip)):
            extra = ["nodad"] if v6 else []
            sh("ip", "-n", name, "addr", "add", f"{ip}/{plen}", "dev", "ul0", *extra)
            sh("ip", "-n", name, "link", "set", "ul0", "up")
            sh("ip", "-n", name, "route", "add", "default", "via", peer)
    except BaseException:
        bed.delete()
        raise
    return bed


def wg_keypair() -> tuple[str, str]:
    """(private, public) WireGuard keys in base64, from ``wg genkey`` / ``wg pubkey``."""
    private = sh("wg", "genkey").strip()
    done = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"wg pubkey: {done.stderr.strip()}")
    return private, done.stdout.strip()


def private_key_forms(params: Any) -> list[str]:
    """Every form in which a WIREGUARD mechanism's private keys might leak into a log or an
    error: base64 as given, and the hex of the UAPI (both cases)."""
    forms = []
    for key in ("src_private_key", "dst_private_key"):
        raw = base64.b64decode(params[key])
        forms += [params[key], raw.hex(), raw.hex().upper()]
    return forms


def wireguard_pids(name_prefix: str = "nsmwg") -> dict[int, str]:
    """{pid: device} of every live (not zombie) ``wireguard-go`` process whose device name starts
    with ``name_prefix``."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "wireguard-go":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = [a.decode() for a in f.read().split(b"\0") if a]
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and args and args[-1].startswith(name_prefix):
            found[int(entry)] = args[-1]
    return found


@dataclass
class RemotePair:
    """The two cross-connects nsmd would send for one client->endpoint connection across nodes:
    ``outgoing`` to the client's node (source local), ``incoming`` to the endpoint's node
    (destination local)."""

    outgoing: crossconnect_pb2.CrossConnect
    incoming: crossconnect_pb2.CrossConnect


def remote_pair(
    name: str,
    client: Pod,
    endpoint: Pod,
    client_node_ip: str,
    endpoint_node_ip: str,
    mechanism: str = "VXLAN",
    *,
    vni: int = 3,
    ports: tuple[int, int] = (51820, 51821),
    keys: tuple[tuple[str, str], tuple[str, str]] | None = None,
    client_if: str = "nsm0",
    endpoint_if: str = "nsm0",
    src_ip: str = "10.60.1.1/30",
    dst_ip: str = "10.60.1.2/30",
    **ip_context: Any,
) -> RemotePair:
    """Build the pair like nsmd (spec §3.3, §7.3): the source nsmd's local connection (path of
    one segment) and the remote connection (two segments) whose mechanism carries the tunnel
    parameters: ``src_ip`` (client node), ``dst_ip`` (endpoint node) and ``vni`` for VXLAN;
    ports and both key pairs for WIREGUARD (``keys`` = ((src private, src public), (dst private,
    dst public)), generated when None)."""
    ctx = connectioncontext_pb2.ConnectionContext(
        ip_context=connectioncontext_pb2.IPContext(
            src_ip_addr=src_ip, dst_ip_addr=dst_ip, **ip_context
        )
    )
    params = {"src_ip": client_node_ip, "dst_ip": endpoint_node_ip}
    if mechanism == "VXLAN":
        params["vni"] = str(vni)
    elif mechanism == "WIREGUARD":
        (src_priv, src_pub), (dst_priv, dst_pub) = keys or (wg_keypair(), wg_keypair())
        params.update(
            src_port=str(ports[0]),
            dst_port=str(ports[1]),
            src_private_key=src_priv,
            src_public_key=src_pub,
            dst_private_key=dst_priv,
            dst_public_key=dst_pub,
        )
    segments = [
        connection_pb2.PathSegment(name="nsmd-client-node", id=f"{name}-1"),
        connection_pb2.PathSegment(name="nsmd-endpoint-node", id=f"{name}-2"),
    ]

    def local(conn_id: str, pod: Pod, ifname: str, segment: int) -> connection_pb2.Connection:
        conn = end(conn_id, ifname, pod.inode)
        conn.context.CopyFrom(ctx)
        conn.path.path_segments.append(segments[segment])
        return conn

    remote = connection_pb2.Connection(
        id=f"{name}-remote",
        network_service="svc",
        mechanism=connection_pb2.Mechanism(type=mechanism, parameters=params),
        context=ctx,
        path=connection_pb2.Path(index=1, path_segments=segments),
        network_service_endpoint_name="nse-1",
    )
    outgoing = crossconnect_pb2.CrossConnect(
        id=f"{name}-out",
        payload="IP",
        source=local(f"{name}-client", client, client_if, 0),
        destination=remote,
    )
    incoming = crossconnect_pb2.CrossConnect(
        id=f"{name}-in",
        payload="IP",
        source=remote,
        destination=local(f"{name}-endpoint", endpoint, endpoint_if, 1),
    )
    return RemotePair(outgoing, incoming)


def numbered_xcon(
    family: str, index: int, src: Pod, dst: Pod, net: int, ends: tuple[str, str] | None = None
) -> crossconnect_pb2.CrossConnect:
    """Cross-connect ``index`` of a family: id ``<family>-<index>``, interfaces
    ``<end prefix><index>`` (the family name by default) and subnet ``10.<net>.<index>.0/30``."""
    src_if, dst_if = ends or (family, family)
    return local_xcon(
        f"{family}-{index}",
        src,
        dst,
        src_name=f"{src_if}{index}",
        dst_name=f"{dst_if}{index}",
        src_ip=f"10.{net}.{index}.1/30",
        dst_ip=f"10.{net}.{index}.2/30",
    )


def netns_executor(netns_name: str) -> concurrent.futures.ThreadPoolExecutor:
    """One thread that entered named namespace ``netns_name``: what it runs, runs there (as a
    worker process of a forwarder running in that namespace would)."""
    from nsm_forwarder.drivers.linux import netns

    def enter() -> None:
        fd = os.open(f"/var/run/netns/{netns_name}", os.O_RDONLY)
        try:
            netns.enter(fd)
        finally:
            os.close(fd)

    return concurrent.futures.ThreadPoolExecutor(1, initializer=enter)

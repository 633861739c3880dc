"""Shared test machinery: pod namespaces, a registrar stand-in on a background loop, and a real
forwarder process (``nsm-forwarder run``) with a gRPC client over its unix socket."""

from __future__ import annotations

import asyncio
import itertools
import os
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

from nsm_forwarder.actors.registrar_server import RegistrarServer
from nsm_forwarder.proto import (
    connection_pb2,
    connectioncontext_pb2,
    crossconnect_pb2,
    crossconnect_pb2_grpc,
    forwarder_pb2_grpc,
)

T = TypeVar("T")
_counter = itertools.count(1)
IS_ROOT = os.geteuid() == 0


def unique(prefix: str) -> str:
    """A short name unique to this test process (fits interface and netns name limits)."""
    return f"{prefix}{os.getpid() % 10000}x{next(_counter)}"


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
                "1",
                ip,
            ],
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

    def start(self) -> None:
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
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
            self.proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "nsm_forwarder.actors.cli", "run", *self.args],
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_until(lambda: self.accepts() or self.proc.poll() is not None, 30, "the socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"forwarder exited at start:\n{self.log()}")

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
        assert self.proc is not None
        out = sh("pgrep", "-P", str(self.proc.pid), check=False)
        return [int(p) for p in out.split()]

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


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

"""``nsm-forwarder demo``: two pods connected through a real forwarder, end to end.

What it does, printing each step with its time:
  1. makes two pod network namespaces (a client and an endpoint);
  2. starts a registrar that speaks nsmd's protocol, and a forwarder (``nsm-forwarder run``,
     a separate process with its worker processes) that registers with it;
  3. asks the forwarder over its unix-socket gRPC API for a cross-connect between the pods;
  4. pings the endpoint from the client through it;
  5. closes the cross-connect, stops the forwarder (it unregisters), removes everything.
Exit 0 when every step worked; without root, one clear message and exit 1. ``--driver vpp`` does
the same through a VPP already running in this network namespace (the forwarder's VPP driver:
veth + af_packet ends joined by an L2 cross-connect in VPP).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from nsm_forwarder.proto import (
    connection_pb2,
    connectioncontext_pb2,
    crossconnect_pb2,
    forwarder_pb2_grpc,
)
from nsm_forwarder.tools.registrar_server import RegistrarServer

T = TypeVar("T")

CLIENT_IP, ENDPOINT_IP = "10.60.1.1/30", "10.60.1.2/30"


class DemoFailed(Exception):
    pass


class Steps:
    """Prints numbered steps with the time since start and each step's duration."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.number = 0

    async def run(self, title: str, action: Callable[[], Awaitable[T]]) -> T:
        self.number += 1
        began = time.monotonic()
        print(f"[{began - self.start:7.3f}s] {self.number:2d}. {title} ...", flush=True)
        result = await action()
        took = (time.monotonic() - began) * 1000
        print(f"{'':10} ok ({took:.1f} ms){_detail(result)}", flush=True)
        return result


def _detail(result: Any) -> str:
    return f": {result}" if isinstance(result, str) and result else ""


def sh(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise DemoFailed(f"{' '.join(cmd)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def make_xcon(client_inode: int, endpoint_inode: int) -> crossconnect_pb2.CrossConnect:
    ctx = connectioncontext_pb2.ConnectionContext(
        ip_context=connectioncontext_pb2.IPContext(src_ip_addr=CLIENT_IP, dst_ip_addr=ENDPOINT_IP)
    )

    def end(conn_id: str, name: str, inode: int) -> connection_pb2.Connection:
        return connection_pb2.Connection(
            id=conn_id,
            network_service="demo-service",
            mechanism=connection_pb2.Mechanism(
                type="KERNEL_INTERFACE",
                parameters={"name": name, "netnsInode": str(inode), "description": "demo"},
            ),
            context=ctx,
        )

    return crossconnect_pb2.CrossConnect(
        id="1",
        payload="IP",
        source=end("1-src", "nsm0", client_inode),
        destination=end("1-dst", "nsm0", endpoint_inode),
    )


async def _demo(
    workdir: str, pods: list[str], keep_logs: bool, driver: str, settings: dict[str, str]
) -> None:
    steps = Steps()
    client, endpoint = pods
    registrar_sock = os.path.join(workdir, "registrar.sock")
    forwarder_sock = os.path.join(workdir, "forwarder.sock")
    log_path = os.path.join(workdir, "forwarder.log")
    registrar = RegistrarServer(registrar_sock, liveness_interval=1.0)
    forwarder: asyncio.subprocess.Process | None = None

    async def make_pods() -> str:
        for pod in pods:
            sh("ip", "netns", "add", pod)
        return f"{client} and {endpoint}"

    await steps.run("create two pod network namespaces", make_pods)
    inodes = [os.stat(f"/var/run/netns/{pod}").st_ino for pod in pods]

    async def start_registrar() -> str:
        await registrar.start()
        return registrar_sock

    await steps.run("start an nsmd registrar stand-in", start_registrar)
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    try:

        def forwarder_exited() -> bool:
            return forwarder is not None and forwarder.returncode is not None

        async def start_forwarder() -> str:
            nonlocal forwarder
            env = dict(os.environ)
            env.update(
                FORWARDER_NAME="demo-forwarder",
                FORWARDER_SOCKET=forwarder_sock,
                FORWARDER_REGISTRAR_SOCKET=registrar_sock,
                NSM_BASEDIR=workdir,
                NSM_FORWARDER_SRC_IP="127.0.0.1",
                INSECURE="true",
                NSM_FORWARDER_HEALTH_PORT="0",
                NSM_FORWARDER_REREGISTER_INTERVAL="1s",
                NSM_FORWARDER_DRIVER=driver,
                **settings,
            )
            forwarder = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "nsm_forwarder.tools.cli",
                "run",
                env=env,
                stdout=log_file,
                stderr=log_file,
            )
            await registrar.wait_for(
                lambda: "demo-forwarder" in registrar.mechanisms or forwarder_exited(), 30
            )
            if "demo-forwarder" not in registrar.mechanisms:
                raise DemoFailed("the forwarder exited at start (its log follows)")
            update = registrar.mechanisms["demo-forwarder"]
            local = ",".join(m.type for m in update.local_mechanisms)
            remote = ",".join(m.type for m in update.remote_mechanisms)
            return (
                f"registered as demo-forwarder (driver {driver}); mechanisms local [{local}] "
                f"remote [{remote}]"
            )

        await steps.run("start the forwarder and wait for it to register", start_forwarder)
        async with grpc.aio.insecure_channel("unix://" + forwarder_sock) as channel:
            stub = forwarder_pb2_grpc.ForwarderStub(channel)
            xcon = make_xcon(*inodes)

            async def request() -> str:
                await stub.Request(xcon, timeout=15)
                return f"{client}:nsm0 {CLIENT_IP} <-> {endpoint}:nsm0 {ENDPOINT_IP}"

            await steps.run("Request a cross-connect over the gRPC API", request)

            async def ping() -> str:
                out = await asyncio.to_thread(
                    sh,
                    "ip",
                    "netns",
                    "exec",
                    client,
                    "ping",
                    "-c",
                    "3",
                    "-i",
                    "0.2",
                    "-W",
                    "1",
                    ENDPOINT_IP.split("/")[0],
                )
                return next((line for line in out.splitlines() if "packet loss" in line), "")

            await steps.run("ping the endpoint from the client", ping)

            async def close_and_check() -> str:
                await stub.Close(xcon, timeout=15)
                for pod in pods:
                    links = sh("ip", "-n", pod, "-o", "link", "show")
                    if "nsm0" in links:
                        raise DemoFailed(f"nsm0 still exists in {pod} after Close")
                return "no interfaces left in either pod"

            await steps.run("Close the cross-connect", close_and_check)

        async def stop_forwarder() -> str:
            assert forwarder is not None
            forwarder.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(forwarder.wait(), 15)
            if code != 0:
                raise DemoFailed(f"forwarder exited with {code}")
            await registrar.wait_for(lambda: "demo-forwarder" not in registrar.registered, 5)
            return "exit 0, unregistered from nsmd"

        await steps.run("stop the forwarder (SIGTERM)", stop_forwarder)
    except BaseException:
        if forwarder is not None and forwarder.returncode is None:
            forwarder.kill()
            await forwarder.wait()
        log_file.close()
        print("--- forwarder log ---", file=sys.stderr)
        with open(log_path, errors="replace") as f:
            sys.stderr.write(f.read())
        raise
    finally:
        if not log_file.closed:
            log_file.close()
        await registrar.stop()
    if keep_logs:
        with open(log_path, errors="replace") as f:
            print("--- forwarder log ---\n" + f.read())
    print(f"[{time.monotonic() - steps.start:7.3f}s] demo completed")


def run_demo(
    keep_logs: bool = False, driver: str = "kernel", settings: dict[str, str] | None = None
) -> int:
    """Run the demo; ``driver`` vpp uses a VPP running in this network namespace (its sockets
    named by ``settings``, environment variables of the forwarder's VPP settings)."""
    if os.geteuid() != 0:
        print(
            "nsm-forwarder demo needs root: it creates network namespaces and veth interfaces "
            "(try: sudo nsm-forwarder demo)",
            file=sys.stderr,
        )
        return 1
    if shutil.which("ip") is None or shutil.which("ping") is None:
        print(
            "nsm-forwarder demo needs the 'ip' and 'ping' commands "
            "(apt-get install iproute2 iputils-ping)",
            file=sys.stderr,
        )
        return 1
    workdir = tempfile.mkdtemp(prefix="nsmdemo-", dir="/tmp")
    tag = f"nsmdemo{os.getpid() % 100000}"
    pods = [f"{tag}-client", f"{tag}-endpoint"]
    try:
        asyncio.run(_demo(workdir, pods, keep_logs, driver, settings or {}))
        return 0
    except DemoFailed as exc:
        print(f"nsm-forwarder demo failed: {exc}", file=sys.stderr)
        return 1
    except (grpc.RpcError, TimeoutError) as exc:
        print(f"nsm-forwarder demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for pod in pods:
            subprocess.run(["ip", "netns", "del", pod], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
        print("cleaned up: pod namespaces and temporary files removed")

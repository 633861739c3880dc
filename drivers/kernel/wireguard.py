"""Userspace WireGuard devices: one ``wireguard-go`` daemon per tunnel, driven over its UAPI.

Where the kernel has no WireGuard module (see :mod:`.wgselect`), a tunnel is a ``wireguard-go``
process (Debian package ``wireguard-go``). Life of one device, named by :func:`device_name`
(unique on the machine, because ``/var/run/wireguard`` is shared by every network namespace):

1. :func:`start` runs ``wireguard-go <name>`` in the caller's network namespace (the node's). Its
   first process creates the TUN device and the listening UAPI socket
   ``/var/run/wireguard/<name>.sock``, starts the daemon and exits; the daemon belongs to no
   worker (own session, re-parented to init), so the tunnel outlives worker and forwarder
   restarts. Its UDP sockets live in the node namespace for good.
2. :func:`configure` sends private key, listen port and the one peer over the UAPI socket. Keys
   are hex there (base64 in the mechanism parameters); neither form ever reaches a log line, an
   error message or an argv.
3. The driver then moves the TUN into the pod namespace under the requested name. wireguard-go
   keeps working: it reads and writes the TUN through its fd, and notices up/down in another
   namespace by polling the fd (its ``routineHackListener``).
4. :func:`stop` finds the daemon again by scanning ``/proc`` for ``wireguard-go <name>`` (no
   state of ours needed, so any worker of any forwarder incarnation can do it), SIGTERMs it
   (SIGKILL if it lingers) and removes its socket and log. The TUN goes with the process; if the
   TUN is deleted first (pod gone, orphan sweep), the daemon exits by itself.

The daemon's errors go to ``<STATE_DIR>/<name>.log`` (``LOG_LEVEL=error``; wireguard-go never
logs keys), removed with the device.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time

from nsm_forwarder.drivers.errors import AlreadyExists, DriverError
from nsm_forwarder.drivers.shapes import WireguardTunnel, endpoint

log = logging.getLogger(__name__)

BINARY = "wireguard-go"
#: Where wireguard-go puts its UAPI sockets (fixed in wireguard-go; not per namespace).
UAPI_DIR = "/var/run/wireguard"
#: Where the daemons' logs go.
STATE_DIR = "/run/nsm-forwarder/wg"
PREFIX = "nsmwg"
KEEPALIVE = 25
START_TIMEOUT = 10.0
STOP_TIMEOUT = 2.0
UAPI_TIMEOUT = 5.0
#: Tunnels carry IPv4 and IPv6 (upstream allowed IPv4 only, spec §8.1 item 11).
ALLOWED_IPS = ("0.0.0.0/0", "::/0")


def device_name(node_inode: int, owner_tag: str) -> str:
    """The machine-unique name of the device of the cross-connect end tagged ``owner_tag``
    (:func:`~nsm_forwarder.drivers.base.tag`: forwarder, id, side) on the node whose network
    namespace has inode ``node_inode``; 15 bytes, so it fits IFNAMSIZ."""
    digest = hashlib.sha256(f"{node_inode}:{owner_tag}".encode()).hexdigest()
    return f"{PREFIX}{digest[:10]}"


def socket_path(name: str) -> str:
    return os.path.join(UAPI_DIR, f"{name}.sock")


def log_path(name: str) -> str:
    return os.path.join(STATE_DIR, f"{name}.log")


def unavailable() -> str | None:
    """Why userspace WireGuard cannot work here, or None when it can."""
    if shutil.which(BINARY) is None:
        return f"{BINARY} is not installed"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun does not exist"
    try:
        os.makedirs(UAPI_DIR, mode=0o755, exist_ok=True)
        os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    except OSError as exc:
        return f"cannot create {UAPI_DIR} or {STATE_DIR}: {exc.strerror}"
    if not os.access(UAPI_DIR, os.W_OK):
        return f"{UAPI_DIR} is not writable"
    return None


# ---------------------------------------------------------------------------------------------
# processes


def _state(pid: int) -> str | None:
    """The process state letter (R, S, Z, ...) or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :][:1].decode() or None


def _alive(pid: int) -> bool:
    state = _state(pid)
    return state is not None and state not in ("Z", "X")


def running() -> dict[str, list[int]]:
    """{device name: pids} of every live ``wireguard-go`` process of one of our devices."""
    found: dict[str, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                if f.read().strip() != BINARY.encode():
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = [a for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        name = args[-1].decode(errors="replace") if len(args) >= 2 else ""
        if name.startswith(PREFIX) and _alive(pid):
            found.setdefault(name, []).append(pid)
    return found


def pids(name: str) -> list[int]:
    """PIDs of the live ``wireguard-go`` processes serving device ``name``."""
    return running().get(name, [])


def start(name: str) -> None:
    """Start the daemon of device ``name`` in the calling thread's network namespace.

    Returns once the TUN device and the UAPI socket exist. Raises :class:`DriverError` with
    wireguard-go's own words when it fails.
    """
    os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        # errors only, to the log file (the daemon inherits our stdout/stderr when set)
        "LOG_LEVEL": "error",
        # older wireguard-go releases refuse to run where the kernel module exists
        "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1",
    }
    path = log_path(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        done = subprocess.run(
            [BINARY, name],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            env=env,
            cwd="/",
            timeout=START_TIMEOUT,
            start_new_session=True,  # no signal for the worker's group reaches the daemon
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DriverError(f"start {BINARY} {name}: {exc}") from None
    finally:
        os.close(fd)
    if done.returncode != 0:
        raise DriverError(
            f"{BINARY} {name} failed to start (exit code {done.returncode}): {_tail(path)}"
        )
    if not os.path.exists(socket_path(name)):
        raise DriverError(f"{BINARY} {name} started but made no UAPI socket {socket_path(name)}")


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            text = [
                line.strip()
                for line in f
                if line.strip() and not line.startswith(("┌", "│", "└"))  # the banner
            ]
    except OSError:
        return "(no output)"
    return " / ".join(text[-lines:]) or "(no output)"


def stop(name: str, timeout: float = STOP_TIMEOUT, *, found: list[int] | None = None) -> bool:
    """Stop every daemon of device ``name`` and remove its socket and log.

    ``found``: its PIDs when the caller has just scanned (:func:`running`). Idempotent; True
    when a process was running. Raises :class:`DriverError` only if a process survives
    SIGKILL.
    """
    targets = pids(name) if found is None else list(found)
    was_running = bool(targets)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            targets = [pid for pid in targets if _alive(pid)]
            if not targets or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if not targets:
            break
        log.debug("%s %s did not stop on %s", BINARY, name, signal.Signals(sig).name)
    if targets:
        raise DriverError(f"{BINARY} {name} (pid {', '.join(map(str, targets))}) did not stop")
    remove_files(name)
    return was_running


def remove_files(name: str) -> None:
    """Remove the UAPI socket and the log of device ``name`` (no daemon may serve it any more;
    a daemon that exits by itself removes only its socket)."""
    for path in (socket_path(name), log_path(name)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DriverError(f"remove {path}: {exc.strerror}") from None


# ---------------------------------------------------------------------------------------------
# UAPI


def _hex(key_b64: str) -> str:
    return base64.b64decode(key_b64, validate=True).hex()


def _uapi(name: str, request: str) -> int:
    """Send one UAPI request; the errno of the reply (0 = done). The request (which may hold
    a key) never appears in an error."""
    path = socket_path(name)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(UAPI_TIMEOUT)
            sock.connect(path)
            sock.sendall(request.encode())
            reply = b""
            while not reply.endswith(b"\n\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        text = exc.strerror or type(exc).__name__
        raise DriverError(f"UAPI socket {path}: {text}") from None
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("errno="):
            try:
                return int(line[len("errno=") :])
            except ValueError:
                break
    raise DriverError(f"UAPI socket {path}: no errno in the reply")


def port_in_use(port: int) -> AlreadyExists:
    return AlreadyExists(f"WireGuard listen port {port} is already in use on this node")


def check_port(port: int) -> None:
    """AlreadyExists when UDP ``port`` is taken in the calling thread's namespace (the node's).

    wireguard-go binds its port only while its device is up, and its UAPI reports a clash only
    then; the device is configured before it is up (in the pod), so a clash would otherwise show
    as nothing but a tunnel that never comes up. Probed on IPv4 and IPv6, as wireguard-go binds
    both.
    """
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        probe = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise port_in_use(port) from None
            if exc.errno != errno.EADDRNOTAVAIL:  # no IPv6 here: nothing to clash with
                raise
        finally:
            probe.close()


def configure(name: str, tunnel: WireguardTunnel, keepalive: int = KEEPALIVE) -> None:
    """Private key, listen port and exactly one peer (the other node), allowed IPs all."""
    lines = [
        "set=1",
        f"private_key={_hex(tunnel.private_key)}",
        f"listen_port={tunnel.listen_port}",
        "replace_peers=true",
        f"public_key={_hex(tunnel.peer_public_key)}",
        f"endpoint={endpoint(str(tunnel.remote_ip), tunnel.remote_port)}",
        "replace_allowed_ips=true",
        *(f"allowed_ip={net}" for net in ALLOWED_IPS),
        f"persistent_keepalive_interval={keepalive}",
    ]
    code = _uapi(name, "\n".join(lines) + "\n\n")
    if code == 0:
        return
    err = abs(code)
    if err == errno.EADDRINUSE:
        raise port_in_use(tunnel.listen_port)
    raise DriverError(
        f"configure WireGuard device {name} (listen port {tunnel.listen_port}, peer "
        f"{endpoint(str(tunnel.remote_ip), tunnel.remote_port)}): UAPI errno {err} "
        f"({os.strerror(err)})"
    )

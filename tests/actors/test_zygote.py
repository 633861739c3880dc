"""The zygote forks real worker processes: pid, process group, fds, signals, exit codes, death
with its parent, restart after its own death, and the fallback to spawning.

Every test stops what it started (zygote, children, helper processes); none needs root (the
worker only constructs its driver; nothing here calls ``init``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from nsm_forwarder.actors.messages import Decoder, WorkerCall, WorkerReply, pack
from nsm_forwarder.actors.zygote import Spawner, Zygote, ZygoteChild, ZygoteError
from tests.helpers import wait_until

WORKER = [sys.executable, "-m", "nsm_forwarder.actors.worker"]


@pytest.fixture
def zyg() -> Iterator[Zygote]:
    made = Zygote(timeout=20)
    try:
        yield made
    finally:
        made.stop()


def gone(pid: int) -> bool:
    """The process has exited (no such pid, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def spawn_worker(zyg: Zygote, *options: str) -> tuple[ZygoteChild, socket.socket, int]:
    """A worker forked by ``zyg`` (kernel driver, index 0); (child, our end, its fd number)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        argv = [*WORKER, "--fd", str(theirs.fileno()), "--driver", "kernel", *options]
        child = zyg.spawn(argv, [theirs.fileno()])
        return child, ours, theirs.fileno()
    finally:
        theirs.close()


def call(sock: socket.socket, method: str, *args: object) -> WorkerReply:
    sock.settimeout(20)
    sock.sendall(pack(WorkerCall(1, method, list(args), None)))
    decoder = Decoder()
    while True:
        data = sock.recv(65536)
        assert data, "the worker closed its socket"
        for msg in decoder.feed(data):
            assert isinstance(msg, WorkerReply)
            return msg


def test_zygote_child_is_a_worker_with_its_own_pid_group_and_fd(zyg: Zygote) -> None:
    child, sock, target = spawn_worker(zyg)
    with sock:
        assert call(sock, "ping").result == "pong"
        assert zyg.pid is not None and ppid(child.pid) == zyg.pid
        assert os.getpgid(child.pid) == child.pid
        assert child.poll() is None
        fds = {
            int(fd): os.readlink(f"/proc/{child.pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{child.pid}/fd")
        }
        peer = os.readlink(f"/proc/{os.getpid()}/fd/{sock.fileno()}")
        assert fds[target].startswith("socket:") and fds[target] != peer
        # nothing of the zygote's leaks into the child: no control socket, pidfd or epoll
        assert not [v for v in fds.values() if "pidfd" in v or "eventpoll" in v]
        sockets = [fd for fd, v in fds.items() if v.startswith("socket:")]
        assert sockets == [target]
    assert child.wait(20) == 0  # EOF: the worker exits normally


def test_zygote_child_signal_and_exit_codes(zyg: Zygote) -> None:
    child, sock, _ = spawn_worker(zyg)
    with sock:
        assert call(sock, "ping").ok
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.2)
        child.send_signal(signal.SIGKILL)
        assert child.wait(20) == -signal.SIGKILL
        assert child.poll() == -signal.SIGKILL
        child.send_signal(signal.SIGKILL)  # after exit: nothing happens, as with Popen
    crashing, sock, _ = spawn_worker(zyg, "--faults", "worker:crash")
    with sock:
        assert call(sock, "ping").ok  # ping is spared by faults
        sock.sendall(pack(WorkerCall(2, "stats", [[]], None)))
        assert crashing.wait(20) == 70  # the injected crash's exit status


def test_zygote_restarts_after_dying_and_its_children_die_with_it(zyg: Zygote) -> None:
    child, sock, _ = spawn_worker(zyg)
    with sock:
        assert call(sock, "ping").ok
        first = zyg.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert child.wait(20) == -signal.SIGKILL
        wait_until(lambda: gone(child.pid), 10, "the worker died with the zygote")
        assert sock.recv(1) == b""
    again, sock, _ = spawn_worker(zyg)
    with sock:
        assert zyg.pid not in (None, first)
        assert call(sock, "ping").result == "pong"
    assert again.wait(20) == 0


def test_zygote_outlives_the_thread_that_first_asked_for_it(zyg: Zygote) -> None:
    """PR_SET_PDEATHSIG fires when the parent *thread* exits: the zygote must not die when the
    thread that started it (a worker's receive thread, say) ends."""
    started = threading.Thread(target=zyg.start)
    started.start()
    started.join(30)
    pid = zyg.pid
    assert pid is not None
    time.sleep(0.5)
    assert not gone(pid) and zyg.pid == pid


def test_zygote_stop_kills_children(zyg: Zygote) -> None:
    child, sock, _ = spawn_worker(zyg)
    with sock:
        assert call(sock, "ping").ok
        pid = zyg.pid
        assert pid is not None
        zyg.stop()
        assert child.wait(20) == -signal.SIGKILL
        wait_until(lambda: gone(pid) and gone(child.pid), 10, "zygote and child gone")


HOLDER = textwrap.dedent(
    """
    import socket, sys, time
    from nsm_forwarder.actors.zygote import Zygote
    z = Zygote(timeout=20)
    ours, theirs = socket.socketpair()
    argv = [sys.executable, "-m", "nsm_forwarder.actors.worker", "--fd", str(theirs.fileno())]
    child = z.spawn(argv, [theirs.fileno()])
    print(z.pid, child.pid, flush=True)
    time.sleep(60)
    """
)


def test_zygote_and_children_die_with_the_main_process() -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        zygote_pid, child_pid = (int(p) for p in holder.stdout.readline().split())
        assert not gone(zygote_pid) and not gone(child_pid)
    finally:
        holder.kill()
        holder.wait(10)
    wait_until(lambda: gone(zygote_pid) and gone(child_pid), 10, "zygote and worker gone")


def test_zygote_that_cannot_start_is_an_error_and_popen_falls_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ZygoteError) as info:
        Zygote(timeout=20, python="/nonexistent/python").start()
    assert info.value.fatal
    spawner = Spawner(Zygote(timeout=20, python="/nonexistent/python"))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        argv = [*WORKER, "--fd", str(theirs.fileno())]
        proc = spawner.popen(argv, pass_fds=[theirs.fileno()], process_group=0)
        theirs.close()
        try:
            assert isinstance(proc, subprocess.Popen)
            assert ppid(proc.pid) == os.getpid() and os.getpgid(proc.pid) == proc.pid
            assert call(ours, "ping").result == "pong"
            assert spawner.disabled is not None and "/nonexistent/python" in spawner.disabled
            assert "not using the zygote any more" in caplog.text
        finally:
            proc.kill()
            proc.wait(10)


def test_zygote_runs_only_the_worker() -> None:
    proc = Spawner().popen([sys.executable, "-c", "pass"], process_group=0)
    assert isinstance(proc, subprocess.Popen)
    assert proc.wait(10) == 0
    with pytest.raises(ZygoteError):
        Zygote().spawn([sys.executable, "-c", "pass"])

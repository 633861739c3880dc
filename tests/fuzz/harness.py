"""The fuzz bed and the checks made after every case.

The bed: two node namespaces joined by an underlay (so VXLAN and WireGuard requests can really
be built), one real forwarder running in node ``a`` with its registrar stand-in, three pod
namespaces, a namespace made and deleted again, and a plain file (for inodes that point
elsewhere).

After every case (:meth:`Fuzzer.run`):
1. every answer was OK or a client-error status (:data:`CLIENT_ERRORS`) with a message; a
   client that gave up itself sees DEADLINE_EXCEEDED, which is allowed for it only;
2. the forwarder is still running;
3. once calls whose clients gave up have finished, the kernel, the Store and the Monitor agree
   (:func:`~tests.fuzz.state.disagreements`: one set of interfaces per id, no leak, nothing
   lost), and an OK Request that nothing followed left its cross-connect reported as sent;
4. closing everything reported succeeds and leaves no tagged interface anywhere.
"""

from __future__ import annotations

import concurrent.futures
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc

from tests.conftest import Node
from tests.fuzz.state import close_everything, kernel_sets, seen, settled
from tests.fuzz.strategies import Case, Op, World
from tests.helpers import (
    BackgroundLoop,
    Pods,
    Underlay,
    make_underlay,
    sh,
    unique,
    wg_keypair,
)
from tests.remote.conftest import node_inodes, stop_daemons

CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
REQUEST = "/forwarder.Forwarder/Request"


class Violation(AssertionError):
    """A promise of the forwarder broken by one case."""


@dataclass
class Bed:
    node: Node
    underlay: Underlay
    pods: Pods
    world: World


@contextmanager
def fuzz_bed(loop: BackgroundLoop, **env: str) -> Iterator[Bed]:
    """Everything a fuzz run needs; all of it removed afterwards, pass or fail."""
    env.setdefault("NSM_FORWARDER_WIREGUARD_BACKEND", "userspace")
    env.setdefault("NSM_FORWARDER_LOG_LEVEL", "INFO")
    underlay = make_underlay()
    pods = Pods()
    node: Node | None = None
    fd, plain = tempfile.mkstemp(prefix="nft-fuzz-")
    os.close(fd)
    try:
        made = [pods.make() for _ in range(3)]
        gone = unique("nfg")
        sh("ip", "netns", "add", gone)
        gone_inode = os.stat(f"/var/run/netns/{gone}").st_ino
        sh("ip", "netns", "del", gone)
        node = Node(loop, netns=underlay.a, NSM_FORWARDER_SRC_IP=underlay.a_ip, **env)
        node.start()
        world = World(
            pods=tuple(p.inode for p in made),
            node_inode=os.stat(f"/var/run/netns/{underlay.a}").st_ino,
            gone_inode=gone_inode,
            file_inode=os.stat(plain).st_ino,
            node_ip=underlay.a_ip,
            peer_ip=underlay.b_ip,
            wg_keys=(wg_keypair(), wg_keypair()),
        )
        yield Bed(node, underlay, pods, world)
    finally:
        inodes = node_inodes(underlay)
        if node is not None:
            node.close()
        stop_daemons(inodes)
        pods.cleanup()
        underlay.delete()
        os.unlink(plain)


@dataclass
class Fuzzer:
    bed: Bed
    #: (what, status) -> how many answers
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    cases: int = 0

    def _send(self, op: Op) -> tuple[grpc.StatusCode, str]:
        channel = self.bed.node.forwarder.channel()
        try:
            if op.kind == "raw":
                call = channel.unary_unary(REQUEST)  # bytes as they are
                call(op.raw, timeout=op.timeout)
            else:
                assert op.xcon is not None
                stub = self.bed.node.forwarder.stub()
                method = stub.Request if op.kind == "request" else stub.Close
                method(op.xcon, timeout=op.timeout)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as err:
            return err.code(), err.details() or ""
        finally:
            channel.close()

    def run(self, case: Case) -> None:
        fwd = self.bed.node.forwarder
        problems: list[str] = []
        last_ok: dict[str, Op] = {}
        for group in case.groups:
            if len(group) == 1:
                answers = [self._send(group[0])]
            else:
                with concurrent.futures.ThreadPoolExecutor(len(group)) as pool:
                    answers = list(pool.map(self._send, group))
            for op, (code, details) in zip(group, answers, strict=True):
                gave_up = op.gives_up and code == grpc.StatusCode.DEADLINE_EXCEEDED
                self.outcomes[(op.kind, "gave up" if gave_up else code.name)] += 1
                if op.xcon is not None:
                    last_ok.pop(op.xcon.id, None)
                    if code == grpc.StatusCode.OK and len(group) == 1:
                        last_ok[op.xcon.id] = op
                if code == grpc.StatusCode.OK or gave_up:
                    continue
                if code not in CLIENT_ERRORS:
                    problems.append(f"{op.kind} answered {code.name}: {details}")
                elif not details.strip():
                    problems.append(f"{op.kind} answered {code.name} without a message")
        self.cases += 1
        if fwd.proc is None or fwd.proc.poll() is not None:
            raise Violation(f"the forwarder died ({case.label}): {problems}\n{fwd.log()[-3000:]}")
        problems += self._settle()
        now = seen(fwd).reported
        for xid, op in last_ok.items():
            if op.kind == "request" and now.get(xid) != op.xcon:
                problems.append(f"{xid!r}: Request answered OK but reported as {now.get(xid)}")
            if op.kind == "close" and xid in now:
                problems.append(f"{xid!r}: Close answered OK but still reported")
        problems += close_everything(fwd)
        left = kernel_sets(fwd.name)
        if left:
            problems.append(f"tagged interfaces left after closing everything: {left}")
        if problems:
            raise Violation(f"case {case.label}:\n" + "\n".join(problems))

    def _settle(self) -> list[str]:
        """Disagreements left once calls whose clients gave up are done (empty: none)."""
        return settled(self.bed.node.forwarder)

    def table(self) -> str:
        """Answers by operation and status, one row per pair, most frequent first."""
        rows = [f"{'operation':<10} {'status':<22} {'answers':>8}"]
        for (kind, status), count in self.outcomes.most_common():
            rows.append(f"{kind:<10} {status:<22} {count:>8}")
        total = sum(self.outcomes.values())
        rows.append(f"{'total':<10} {f'{self.cases} cases':<22} {total:>8}")
        return "\n".join(rows)

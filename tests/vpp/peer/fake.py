"""``FakeVPP``: the API socket, the stats socket, the object table and the fault switches."""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
from pathlib import Path
from types import TracebackType

from tests.vpp.peer import apidefs
from tests.vpp.peer.dispatch import Dispatcher
from tests.vpp.peer.h_tap import TAP_API_FLAG_PERSIST
from tests.vpp.peer.handlers import Ctx
from tests.vpp.peer.linux import Host
from tests.vpp.peer.model import Interface, MemifSocket, Model, Neighbor, Route
from tests.vpp.peer.server import ApiServer, Outcome
from tests.vpp.peer.stats import StatsSegment, StatsServer


class FakeVPP:
    """A protocol-level VPP v26.06 on a unix socket, served from threads of this process.

    ``netns`` is "VPP's" network namespace: where af_packet looks for host interfaces and
    where taps go when no host namespace is asked for (None: the namespace the fake runs in).
    ``vhost_net`` emulates a host with ``/dev/vhost-net`` (real taps are made); without it
    tap_create_v3 answers -11 as VPP does on this machine kind. ``runtime_dir`` (default: the
    API socket's directory) is where relative memif socket names live.
    """

    def __init__(
        self,
        api_socket: str = "/run/vpp/api.sock",
        stats_socket: str | None = "/run/vpp/stats.sock",
        netns: str | None = None,
        api_dir: str | Path | None = None,
        vhost_net: bool = False,
        runtime_dir: str | None = None,
    ) -> None:
        self.api_socket = api_socket
        self.stats_socket = stats_socket
        self.netns = netns
        self.defs = apidefs.load(api_dir)
        self.lock = threading.RLock()
        self.host = Host(netns)
        self.model = Model(runtime_dir or os.path.dirname(os.path.abspath(api_socket)))
        self.model.on_admin = self._on_admin
        self.ctx = Ctx(self.model, self.host, self.defs, vhost_net)
        self.server = ApiServer(api_socket, self._dispatch, self._closed)
        self.dispatcher = Dispatcher(self.ctx, self.lock, self.server.live, self._publish)
        self.segment: StatsSegment | None = None
        self.stats_server: StatsServer | None = None
        self._timer: threading.Timer | None = None
        self._up = threading.Event()

    def _dispatch(self, handle: int, payload: bytes) -> Outcome:
        return self.dispatcher(handle, payload)

    def _closed(self, handle: int) -> None:
        with self.lock:
            self.dispatcher.client_names.pop(handle, None)

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> FakeVPP:
        """Serve in background threads; returns once both sockets accept."""
        with self.lock:
            self.segment = StatsSegment()
            self._publish()
        if self.stats_socket is not None:
            self.stats_server = StatsServer(self.stats_socket, self._segment_fd)
            self.stats_server.start()
        self.server.start()
        self._up.set()
        return self

    def stop(self) -> None:
        """Close clients, remove the sockets and every Linux object the fake made."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._up.clear()
        self.server.stop()
        if self.stats_server is not None:
            self.stats_server.stop()
        with self.lock:
            self._release_linux(keep_persistent=False)
            self.host.remove_socket_files()
            if self.segment is not None:
                self.segment.close()
                self.segment = None

    def restart(self, down_for: float = 0.5, wait: bool = False) -> None:
        """Crash and come back: clients dropped, socket gone for ``down_for`` s, state lost."""
        if self._timer is not None:
            self._timer.cancel()
        self._up.clear()
        self.server.stop()
        if self.stats_server is not None:
            self.stats_server.stop()
        with self.lock:
            self._release_linux(keep_persistent=True)
            self.model.reset()
            if self.segment is not None:
                self.segment.close()
            self.segment = StatsSegment()
            self._publish()
        self._timer = threading.Timer(down_for, self._come_back)
        self._timer.daemon = True
        self._timer.start()
        if wait:
            self.wait_ready(down_for + 10)

    def _come_back(self) -> None:
        if self.stats_server is not None:
            self.stats_server.start()
        self.server.start()
        self._up.set()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        return self._up.wait(timeout)

    def __enter__(self) -> FakeVPP:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _release_linux(self, keep_persistent: bool) -> None:
        """What dies with the VPP process: memif listeners close (their files stay), taps
        whose file descriptors close go away unless made persistent."""
        for sock in self.model.memif_sockets.values():
            if sock.listener is not None:
                sock.listener.close()
                sock.listener = None
        for iface in self.model.ifs.values():
            tap = iface.tap
            if tap is not None and not (keep_persistent and tap.flags & TAP_API_FLAG_PERSIST):
                self.host.delete_link(tap.host_if_name, tap.host_namespace)
        if not keep_persistent:
            for ns, name in sorted(self.host.taps, key=str):
                self.host.delete_link(name, ns)

    def _on_admin(self, iface: Interface, up: bool) -> None:
        if iface.af_packet is not None:
            self.host.set_up(iface.af_packet.host_if_name, up)

    def _segment_fd(self) -> int:
        with self.lock:
            return self.segment.fd if self.segment is not None else -1

    def _publish(self) -> None:
        if self.segment is None:
            return
        live = [(i, iface.name) for i, iface in sorted(self.model.ifs.items())]
        self.segment.publish(self.model.if_names(), self.model.simple, self.model.combined, live)
        self.model.dirty = False

    # -- fault switches ----------------------------------------------------------------------
    def fail(self, message: str, retval: int = -1, count: int | None = 1) -> None:
        """The next ``count`` calls (None: all until cleared) of ``message`` get ``retval``
        in their reply and change nothing."""
        self.dispatcher.fail(message, retval, count)

    def drop_on(self, message: str, after_apply: bool = False) -> None:
        """When ``message`` next arrives, close that client's connection without a reply
        (after applying the call if ``after_apply``)."""
        self.dispatcher.drop_on(message, after_apply)

    def clear_faults(self) -> None:
        self.dispatcher.clear_faults()

    # -- what the tests read -----------------------------------------------------------------
    @property
    def calls(self) -> list[str]:
        with self.lock:
            return list(self.dispatcher.calls)

    @property
    def unhandled(self) -> list[str]:
        with self.lock:
            return list(self.dispatcher.unhandled)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of handler bugs (answered with retval -1); should stay empty."""
        with self.lock:
            return list(self.dispatcher.errors)

    def clients(self) -> dict[int, str]:
        """Connected registrations: handle -> the name given in sockclnt_create."""
        with self.lock:
            names = self.dispatcher.client_names
            return {h: names.get(h, "") for h in self.server.handles()}

    def interfaces(self) -> list[Interface]:
        with self.lock:
            return [copy.deepcopy(i) for _, i in sorted(self.model.ifs.items())]

    def interface(self, sw_if_index: int) -> Interface | None:
        with self.lock:
            found = self.model.get(sw_if_index)
            return copy.deepcopy(found) if found is not None else None

    def by_name(self, name: str) -> Interface | None:
        return next((i for i in self.interfaces() if i.name == name), None)

    def by_tag(self, tag: str) -> Interface | None:
        return next((i for i in self.interfaces() if i.tag == tag), None)

    def memif_sockets(self) -> list[MemifSocket]:
        with self.lock:
            return [
                dataclasses.replace(s, ids=set(s.ids), listener=None)
                for _, s in sorted(self.model.memif_sockets.items())
            ]

    def vxlan_tunnels(self) -> list[Interface]:
        return [i for i in self.interfaces() if i.vxlan is not None]

    def xconnects(self) -> dict[int, int]:
        """rx sw_if_index -> tx sw_if_index of every interface in L2 xconnect mode."""
        return {
            i.sw_if_index: i.l2_xconnect for i in self.interfaces() if i.l2_xconnect is not None
        }

    def routes(self) -> list[Route]:
        with self.lock:
            return [copy.deepcopy(r) for r in self.model.routes.values()]

    def neighbors(self) -> list[Neighbor]:
        with self.lock:
            return [copy.deepcopy(n) for n in self.model.neighbors.values()]

    # -- counters ----------------------------------------------------------------------------
    def set_counters(
        self,
        sw_if_index: int,
        *,
        rx_packets: int | None = None,
        rx_bytes: int | None = None,
        tx_packets: int | None = None,
        tx_bytes: int | None = None,
        rx_errors: int | None = None,
        tx_errors: int | None = None,
        drops: int | None = None,
    ) -> None:
        """Set interface counters (thread 0); unspecified ones keep their value."""
        with self.lock:
            if sw_if_index not in self.model.ifs:
                raise KeyError(f"no interface {sw_if_index}")
            for name, packets, octets in (
                ("rx", rx_packets, rx_bytes),
                ("tx", tx_packets, tx_bytes),
            ):
                old = self.model.combined[name][sw_if_index]
                new = (old[0] if packets is None else packets, old[1] if octets is None else octets)
                self.model.combined[name][sw_if_index] = new
            for name, value in (("rx-error", rx_errors), ("tx-error", tx_errors), ("drops", drops)):
                if value is not None:
                    self.model.simple[name][sw_if_index] = value
            self._publish()

    def set_counter(self, name: str, sw_if_index: int, value: int | tuple[int, int]) -> None:
        """Set any ``/if/<name>`` counter: an int for simple ones, (packets, bytes) for combined."""
        with self.lock:
            if sw_if_index not in self.model.ifs:
                raise KeyError(f"no interface {sw_if_index}")
            if isinstance(value, int):
                self.model.simple[name][sw_if_index] = value
            else:
                self.model.combined[name][sw_if_index] = (int(value[0]), int(value[1]))
            self._publish()

"""One VPP binary-API connection per worker process, through ``vpp_papi.VPPApiClient``.

The client is not thread-safe, and a worker runs one call at a time, so each worker owns one.

- :meth:`VppApi.connect` tries for ``connect_timeout`` seconds (VPP may still be starting) and
  then fails with one clear line naming the socket. Replies are read by the calling thread
  (:mod:`.transport`), not by a reader thread of vpp_papi's.
- :meth:`VppApi.call` sends one request and checks its ``retval``: a refusal becomes a
  ForwarderError whose message names the call and VPP's error (``VPP error -2
  INVALID_SW_IF_INDEX``), with a gRPC status from :mod:`.retvals`.
- A connection that breaks (VPP restarted or stopped, the socket dropped) is made again: a
  read-only call, or one whose request never left, is sent once more on the new connection;
  any other call fails with a retriable UNAVAILABLE error (VPP may have done it), and the next
  call connects again first.
- :meth:`VppApi.instance` names the VPP instance it talks to: a marker kept in the tag of
  ``local0`` (which every VPP has, and which a restart resets), so a restart shows as a new
  instance to every worker.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

import tenacity

from nsm_forwarder.drivers.errors import DriverError, ForwarderError
from nsm_forwarder.drivers.vpp import retvals

log = logging.getLogger(__name__)

#: ``sw_if_index`` of ``local0``, which every VPP has.
LOCAL0 = 0
#: Prefix of the tag marking ``local0`` with the identity of one VPP run.
INSTANCE_TAG = "nsm-vpp-instance:"
#: ``~0``: "none" / "allocate" in VPP's u32 fields.
NONE = 0xFFFFFFFF
#: ``sw_interface_set_flags``: admin up.
IF_ADMIN_UP = 1
AF_PACKET_MODE_ETHERNET = 1
AF_PACKET_FLAG_CKSUM_GSO = 2


def af_packet_args(host: str, *, flags: int = 0, hw_addr: str = "") -> dict[str, Any]:
    """The arguments of ``af_packet_create_v3`` for an ethernet interface on Linux interface
    ``host``: one queue each way, 32 blocks of 2 KiB frames, the given MAC or a random one."""
    args: dict[str, Any] = {
        "mode": AF_PACKET_MODE_ETHERNET,
        "host_if_name": host,
        "rx_frame_size": 2048,
        "tx_frame_size": 2048,
        "rx_frames_per_block": 32,
        "tx_frames_per_block": 32,
        "flags": flags,
        "num_rx_queues": 1,
        "num_tx_queues": 1,
    }
    if hw_addr:
        args.update(hw_addr=hw_addr, use_random_hw_addr=False)
    else:
        args.update(use_random_hw_addr=True)
    return args


class VppUnavailable(ForwarderError):
    """VPP cannot be reached (absent, restarting, the connection dropped); retry later."""

    code = "UNAVAILABLE"
    retriable = True


class VppRefused(ForwarderError):
    """VPP answered a call with a non-zero retval."""

    def __init__(self, call: str, retval: int) -> None:
        super().__init__(
            f"{call}: VPP error {retval} {retvals.name(retval)}", code=retvals.status(retval)
        )
        self.call = call
        self.retval = retval


class VppApi:
    """A lazily (re)connecting VPP API client; see the module docstring."""

    def __init__(
        self,
        socket: str,
        api_dir: str,
        *,
        name: str = "nsm-forwarder",
        connect_timeout: float = 10.0,
        read_timeout: float = 5.0,
    ) -> None:
        self.socket = socket
        self.api_dir = api_dir
        self.name = name
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._client: Any = None
        #: how many times a connection was made (for tests and logs)
        self.connects = 0

    # -- connection ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None

    def connect(self, timeout: float | None = None) -> None:
        """Connect, retrying until ``timeout`` (default ``connect_timeout``) has passed."""
        if self._client is not None:
            return
        from vpp_papi import VPPApiClient  # slow import; only in workers of the VPP driver

        from nsm_forwarder.drivers.vpp.transport import SyncTransport

        limit = self.connect_timeout if timeout is None else timeout
        try:
            tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(VppUnavailable),
                wait=tenacity.wait_exponential(multiplier=0.05, max=0.5),
                stop=tenacity.stop_before_delay(limit),
                reraise=True,
            )(self._connect_once, VPPApiClient, SyncTransport)
        except VppUnavailable as exc:
            raise VppUnavailable(f"cannot connect to VPP at {self.socket}: {exc}") from None

    def _connect_once(self, client_class: Any, transport_class: Any) -> None:
        """One try of :meth:`connect`; VppUnavailable (the reason) when it may work later."""
        why = self._absent()
        if why is not None:
            raise VppUnavailable(why)
        try:
            client = client_class(
                apidir=self.api_dir,
                server_address=self.socket,
                read_timeout=self.read_timeout,
                async_thread=False,  # no event callbacks: no thread to run them
            )
        except Exception as exc:  # bad api dir: no retry helps
            raise DriverError(
                f"cannot load the VPP API definitions from {self.api_dir}: {exc}"
            ) from None
        # replies read by the calling thread (see .transport), not by a thread of vpp_papi's
        client.transport = transport_class(
            client, read_timeout=self.read_timeout, server_address=self.socket
        )
        try:
            client.connect(self.name)
        except Exception as exc:
            _disconnect_quietly(client)
            raise VppUnavailable(f"{type(exc).__name__}: {exc}") from None
        self._client = client
        self.connects += 1
        log.debug("connected to VPP at %s (connection %d)", self.socket, self.connects)

    def _absent(self) -> str | None:
        """Why connecting cannot work now, or None if the socket is there."""
        if not os.path.exists(self.socket):
            return "no such socket (is VPP running?)"
        return None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _disconnect_quietly(client)

    # -- calls -----------------------------------------------------------------------------

    def call(self, msg: str, **args: Any) -> Any:
        """Send ``msg`` with ``args``; the reply (whose retval was 0)."""
        reply = self._send(msg, args)
        retval = int(getattr(reply, "retval", 0))
        if retval != 0:
            raise VppRefused(msg, retval)
        return reply

    def dump(self, msg: str, **args: Any) -> list[Any]:
        """The ``details`` messages of dump ``msg``."""
        result = self._send(msg, args)
        if isinstance(result, tuple):  # a new-style stream: (reply, details)
            reply, details = result
            retval = int(getattr(reply, "retval", 0))
            if retval != 0:
                raise VppRefused(msg, retval)
            return list(details)
        return list(result)

    def _send(self, msg: str, args: dict[str, Any]) -> Any:
        for attempt in (1, 2):
            self.connect()
            try:
                function = getattr(self._client.api, msg)
            except AttributeError:
                raise DriverError(
                    f"this VPP has no API message {msg} (its API definitions in {self.api_dir} "
                    "do not match the running VPP)"
                ) from None
            try:
                return function(**args)
            except (OSError, EOFError) as exc:  # VPPIOError is an IOError (OSError)
                self.close()
                # once more on a new connection where that cannot do a thing twice: a read-only
                # call, or a request that never left (VPP restarted since the last call)
                if attempt == 1 and (_read_only(msg) or _not_sent(exc)):
                    log.debug("%s: VPP connection lost (%s); connecting again", msg, exc)
                    continue
                raise VppUnavailable(
                    f"{msg}: lost the VPP API connection at {self.socket} ({exc})"
                ) from None
            except (ValueError, TypeError, KeyError) as exc:
                raise DriverError(f"{msg}: VPP API client refused the arguments: {exc}") from None
        raise AssertionError("unreachable")

    # -- identity --------------------------------------------------------------------------

    def instance(self) -> str:
        """The identity of the running VPP: the marker in ``local0``'s tag, set if absent."""
        marker = self._marker()
        if marker is None:
            mine = secrets.token_hex(8)
            self.call(
                "sw_interface_tag_add_del",
                is_add=True,
                sw_if_index=LOCAL0,
                tag=INSTANCE_TAG + mine,
            )
            marker = self._marker() or mine
        return marker

    def _marker(self) -> str | None:
        for detail in self.dump("sw_interface_dump", sw_if_index=LOCAL0):
            if int(detail.sw_if_index) == LOCAL0:
                tag = str(detail.tag)
                if tag.startswith(INSTANCE_TAG):
                    return tag[len(INSTANCE_TAG) :]
        return None


def _read_only(msg: str) -> bool:
    return msg.endswith("_dump") or msg in ("show_version", "control_ping")


def _not_sent(exc: BaseException) -> bool:
    """vpp_papi failed to write the request (the peer had closed): VPP never saw it."""
    return "Sendall error" in str(exc) or isinstance(exc, BrokenPipeError)


def _disconnect_quietly(client: Any) -> None:
    try:
        client.disconnect()
    except Exception as exc:  # the connection is being dropped anyway
        log.debug("VPP disconnect: %s", exc)

"""Registrar: keeps this forwarder registered with nsmd's forwarder registrar.

Accepts:  start() / stop(unregister, timeout) / wait_registered(timeout) / statistics() /
          renew(reason) / crashed(), all from the main asyncio loop
Sends:    RequestForwarderRegistration{forwarder_name, forwarder_socket} and RequestLiveness (read
          only) to nsmd's ForwarderRegistration service; RequestForwarderUnRegistration{name} on
          stop(); every state change to the `on_state` callback
Guarantees: registration is retried until it succeeds, including nsmd's "forwarder with name X
          already registered" (nsmd drops the old entry once it sees the old MonitorMechanisms
          stream die); a broken liveness stream (nsmd restart) leads back to waiting for the
          socket and re-registering; the liveness stream is never written to nor half-closed;
          stop() is prompt (cancellation does not wait for the next liveness message, unlike
          upstream, spec §8.1 #25) and sends the unregistration only if this forwarder is
          registered at that moment, so it never removes another process's entry of the same name
Threads:  one asyncio task in the forwarder's main loop; `on_state` runs in that loop
Failure:  gRPC errors and `registered=false` -> one WARNING line, state RETRYING, retried with
          exponential backoff and jitter (tenacity) from FIRST_RETRY up to `retry_interval`;
          any other exception -> logged with traceback, retried the same way;
          the loop only ends through stop(); unregistration errors are logged, never raised
Owns:     its own gRPC channel to the registrar, made by ``dial`` (plaintext or through the
          Transport's mTLS, tls.py); nothing else
The socket and stream plumbing it stands on (dial target, socket probe, stream reading, error
reasons) is in grpc_io.py.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import grpc.aio
import tenacity

from nsm_forwarder.actors.faults import CRASH, HANG, Injector
from nsm_forwarder.actors.grpc_io import (
    failure_reason,
    grpc_address,
    read_stream,
    wait_until_accepting,
)
from nsm_forwarder.proto import forwarderregistrar_pb2, forwarderregistrar_pb2_grpc

log = logging.getLogger(__name__)

MIN_LIVENESS_DURATION = 1.0
"""A liveness stream that ends sooner than this after registration is treated as a failure and
followed by a backoff, so a misbehaving registrar cannot cause a hot loop."""

FIRST_RETRY = 0.1
"""Seconds before the first retry of a failed try; each further one waits twice as long (with
jitter), up to `retry_interval`."""


class RegistrarCrashed(Exception):
    """An injected crash: ends the registration loop for the Supervisor to notice."""


class RegistrationState(enum.Enum):
    """RegistrationState - where the Registrar's loop is."""

    WAITING_FOR_SOCKET = "waiting_for_socket"
    """The registrar socket is missing or refuses connections; polling every 100 ms."""
    REGISTERING = "registering"
    """RequestForwarderRegistration is in flight."""
    REGISTERED = "registered"
    """nsmd accepted the registration; the liveness stream is open."""
    RETRYING = "retrying"
    """The last try failed; backing off (at most `retry_interval`) before the next one."""
    UNREGISTERED = "unregistered"
    """stop() sent RequestForwarderUnRegistration and nsmd acknowledged it."""
    STOPPED = "stopped"
    """stop() has finished; the Registrar cannot be restarted."""


@dataclass(frozen=True)
class RegistrarStatistics:
    """RegistrarStatistics - a snapshot of the Registrar, for /metrics and tests."""

    state: RegistrationState
    registrations: int
    """Successful registrations since start (2 or more means nsmd was re-joined)."""
    failures: int
    """Failed registration tries (errors, `registered=false`, unexpected exceptions)."""
    last_error: str
    """Reason of the last failed try or broken liveness stream; "" if none yet."""


class RegistrationRefused(Exception):
    """RegistrationRefused - nsmd answered the registration with `registered=false`."""


class Registrar:
    """Registrar - registers the forwarder with nsmd and keeps the registration alive.

    1. Construct it with the forwarder's name and socket and nsmd's registrar socket.
    2. `await start()` launches the background loop and returns at once.
    3. `await wait_registered()` if the caller needs to know nsmd accepted us.
    4. `await stop()` cancels the loop and unregisters (shutdown phase "unregister", before the
       gRPC server stops serving).
    """

    def __init__(
        self,
        *,
        name: str,
        forwarder_socket: str,
        registrar_socket: str,
        registrar_socket_type: str = "unix",
        retry_interval: float = 5.0,
        rpc_timeout: float = 5.0,
        on_state: Callable[[RegistrationState], None] | None = None,
        faults: Injector | None = None,
        dial: Callable[[str], grpc.aio.Channel] = grpc.aio.insecure_channel,
    ) -> None:
        if registrar_socket_type not in ("unix", "tcp"):
            raise ValueError(
                f"registrar_socket_type must be 'unix' or 'tcp', not {registrar_socket_type!r}"
            )
        self._name = name
        self._forwarder_socket = forwarder_socket
        self._registrar_socket = registrar_socket
        self._socket_type = registrar_socket_type
        self._target = grpc_address(registrar_socket_type, registrar_socket)
        self._retry_interval = retry_interval
        self._rpc_timeout = rpc_timeout
        self._on_state = on_state
        self._faults = faults or Injector("registrar", ())
        self._dial = dial
        self._renew: asyncio.Event | None = None
        self._renew_reason = ""

        self._state = RegistrationState.WAITING_FOR_SOCKET
        self._registrations = 0
        self._failures = 0
        self._last_error = ""
        self._task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._registered_event: asyncio.Event | None = None
        self._stopped_event: asyncio.Event | None = None

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> RegistrationState:
        """The current RegistrationState."""
        return self._state

    def statistics(self) -> RegistrarStatistics:
        """Return a frozen snapshot of state and counters."""
        return RegistrarStatistics(
            state=self._state,
            registrations=self._registrations,
            failures=self._failures,
            last_error=self._last_error,
        )

    async def start(self) -> None:
        """Start the registration loop as a task of the running loop; return at once.

        Raises RuntimeError if already started or stopped.
        """
        if self._task is not None or self._stop_task is not None:
            raise RuntimeError("Registrar already started or stopped")
        self._events()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"registrar[{self._name}]"
        )

    async def wait_registered(self, timeout: float | None = None) -> None:
        """Wait until the state is REGISTERED.

        Raises TimeoutError after `timeout` seconds (None waits forever) and RuntimeError if
        the Registrar is or gets stopped first.
        """
        registered, stopped = self._events()  # already set ones end the wait at once
        waiters = {
            asyncio.ensure_future(registered.wait()),
            asyncio.ensure_future(stopped.wait()),
        }
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if self._state is RegistrationState.REGISTERED:
            return
        if stopped.is_set():
            raise RuntimeError("Registrar stopped before registering")
        if not done:
            raise TimeoutError(
                f"forwarder {self._name!r} not registered with {self._registrar_socket} "
                f"after {timeout} s (state {self._state.value}, last error: "
                f"{self._last_error or 'none'})"
            )

    async def stop(self, unregister: bool = True, timeout: float = 2.0) -> None:
        """Cancel the loop, then unregister if registered; idempotent.

        The unregistration is sent only when the state is REGISTERED at the time of the call and
        `unregister` is true. It is bounded by `timeout`; its errors are logged, not raised.
        Concurrent or repeated calls wait for the first one to finish.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(
                self._stop(unregister, timeout), name=f"registrar-stop[{self._name}]"
            )
        await asyncio.shield(self._stop_task)

    # ------------------------------------------------------------------ internals

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        # Created lazily so the Registrar can be constructed outside a running loop.
        if self._registered_event is None or self._stopped_event is None:
            self._registered_event = asyncio.Event()
            self._stopped_event = asyncio.Event()
        return self._registered_event, self._stopped_event

    def _set_state(self, state: RegistrationState, *, force: bool = False) -> None:
        if state is self._state and not force:
            return
        self._state = state
        registered, _ = self._events()
        if state is RegistrationState.REGISTERED:
            registered.set()
        else:
            registered.clear()
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                log.exception("registrar: on_state callback failed for state %s", state.value)

    def _fail(self, reason: str) -> None:
        self._failures += 1
        self._last_error = reason
        self._set_state(RegistrationState.RETRYING)

    async def _stop(self, unregister: bool, timeout: float) -> None:
        was_registered = self._state is RegistrationState.REGISTERED
        deadline = time.monotonic() + timeout
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                log.warning("registrar: loop did not stop within %.1f s", timeout)
            elif not task.cancelled() and task.exception() is not None:
                log.error("registrar: loop had failed", exc_info=task.exception())
        if unregister and was_registered:
            await self._unregister(max(deadline - time.monotonic(), 0.1))
        self._set_state(RegistrationState.STOPPED)
        self._events()[1].set()

    async def _unregister(self, timeout: float) -> None:
        request = forwarderregistrar_pb2.ForwarderUnRegistrationRequest(forwarder_name=self._name)
        try:
            async with self._dial(self._target) as channel:
                stub = forwarderregistrar_pb2_grpc.ForwarderUnRegistrationStub(channel)
                async with asyncio.timeout(timeout):
                    reply = await stub.RequestForwarderUnRegistration(request, timeout=timeout)
        except (grpc.aio.AioRpcError, TimeoutError) as err:
            log.warning(
                "registrar: unregistration of forwarder %r from %s failed: %s",
                self._name,
                self._registrar_socket,
                failure_reason(err),
            )
            return
        except Exception:
            log.exception("registrar: unregistration of forwarder %r failed", self._name)
            return
        if reply.un_registered:
            log.info(
                "registrar: forwarder %r unregistered from %s", self._name, self._registrar_socket
            )
            self._set_state(RegistrationState.UNREGISTERED)
        else:
            log.warning("registrar: nsmd answered un_registered=false for forwarder %r", self._name)

    def _waiting_for_socket(self) -> None:
        self._set_state(RegistrationState.WAITING_FOR_SOCKET)
        log.info(
            "registrar: waiting for the forwarder registrar socket %s (%s) to accept connections",
            self._registrar_socket,
            self._socket_type,
        )

    def renew(self, reason: str) -> None:
        """nsmd seems to have forgotten us (it stopped watching our MonitorMechanisms, which it
        takes as our death, while its liveness stream goes on): if registered, end the liveness
        hold and register again. Does nothing in any other state."""
        if self._state is RegistrationState.REGISTERED and self._renew is not None:
            self._renew_reason = reason
            self._renew.set()

    def crashed(self) -> BaseException | None:
        """The error that ended the loop (an injected crash), or None while it runs."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def _inject(self, what: str) -> None:
        """Fault injection: crash ends the loop (the Supervisor restarts the Registrar), hang
        blocks until stop(), error fails this step (it is retried like any failure)."""
        action = await self._faults.acheck(what)
        if action is CRASH:
            raise RegistrarCrashed(f"the registrar crashed (injected) in {what}")
        if action is HANG:
            await asyncio.Event().wait()

    async def _run(self) -> None:
        self._set_state(self._state, force=True)  # report the initial state once
        while True:
            # a registration that lived its normal life starts the backoff afresh
            await self._retrying()(self._attempt)

    def _retrying(self) -> tenacity.AsyncRetrying:
        """Failed tries are retried with exponential backoff, from :data:`FIRST_RETRY` up to
        ``retry_interval``, plus up to FIRST_RETRY of jitter; an injected crash ends the loop."""
        first = min(FIRST_RETRY, self._retry_interval)
        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_result(lambda ok: not ok),
            wait=tenacity.wait_exponential(multiplier=first, max=self._retry_interval)
            + tenacity.wait_random(0, first),
            before_sleep=self._before_retry,
        )

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("registrar: try %d failed; next try in %.1f s", state.attempt_number, wait)

    async def _attempt(self) -> bool:
        """One try: wait for the socket, register, hold the liveness stream. False when it
        failed (to be retried after a backoff), True when a registration ended normally."""
        try:
            await wait_until_accepting(
                self._registrar_socket, self._socket_type, self._waiting_for_socket
            )
            await self._inject("register")
            return await self._register_and_hold()
        except RegistrarCrashed:
            raise
        except Exception as err:
            log.exception("registrar: unexpected error; retrying")
            self._fail(f"unexpected error: {err!r}")
            return False

    async def _register_and_hold(self) -> bool:
        """One try: register, then read the liveness stream until it ends.

        Returns False if the try failed (the caller backs off), True if the
        registration succeeded and its liveness stream later ended after a normal lifetime.
        """
        self._set_state(RegistrationState.REGISTERING)
        request = forwarderregistrar_pb2.ForwarderRegistrationRequest(
            forwarder_name=self._name, forwarder_socket=self._forwarder_socket
        )
        async with self._dial(self._target) as channel:
            stub = forwarderregistrar_pb2_grpc.ForwarderRegistrationStub(channel)
            try:
                reply = await stub.RequestForwarderRegistration(
                    request, timeout=self._rpc_timeout, wait_for_ready=True
                )
                if not reply.registered:
                    raise RegistrationRefused("nsmd answered registered=false")
            except (grpc.aio.AioRpcError, RegistrationRefused) as err:
                why = failure_reason(err)
                log.warning(
                    "registrar: registration of forwarder %r at %s failed (%s); retrying",
                    self._name,
                    self._registrar_socket,
                    why,
                )
                self._fail(why)
                return False

            self._registrations += 1
            self._set_state(RegistrationState.REGISTERED)
            log.info(
                "registrar: forwarder %r registered at %s with socket %s",
                self._name,
                self._registrar_socket,
                self._forwarder_socket,
            )
            started = time.monotonic()
            ended = await self._hold_liveness(stub)
            self._last_error = ended
            lifetime = time.monotonic() - started
            log.warning(
                "registrar: liveness stream of forwarder %r to %s ended (%s) after %.1f s; "
                "re-registering",
                self._name,
                self._registrar_socket,
                ended,
                lifetime,
            )
            if lifetime < MIN_LIVENESS_DURATION:
                self._set_state(RegistrationState.RETRYING)
                return False
            self._set_state(RegistrationState.WAITING_FOR_SOCKET)
            return True

    async def _hold_liveness(
        self, stub: forwarderregistrar_pb2_grpc.ForwarderRegistrationStub
    ) -> str:
        """Read RequestLiveness (never written to) until it ends or renew(); return why."""
        self._renew = renew = asyncio.Event()
        try:
            ended = await read_stream(
                stub.RequestLiveness(), renew, lambda: self._inject("liveness")
            )
        finally:
            self._renew = None
        return f"renewing: {self._renew_reason}" if ended is None else ended

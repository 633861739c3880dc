"""Settings: the forwarder's whole configuration as one typed, frozen model (the model only).

The field types live in :mod:`nsm_forwarder.config.fields`; building a Settings from its layers
(defaults < shipped ``forwarder.toml`` < user config file < environment < CLI flags) is
:func:`nsm_forwarder.config.load_settings` in :mod:`nsm_forwarder.config.loader`; the one-line
:class:`~nsm_forwarder.config.SettingsError` messages are made in
:mod:`nsm_forwarder.config.errors`; ``describe`` and ``as_log_dict`` are in
:mod:`nsm_forwarder.config.describe`.

Each field has exactly one environment variable, given as the field's ``validation_alias``
(the upstream names of spec §4.1, or ``NSM_FORWARDER_<NAME>`` for our own); CLI flags and
config-file keys are the field names.

Constructing ``Settings(...)`` directly validates exactly the keyword arguments given (by field
name) on top of the defaults, reading neither the environment nor any file, so tests and tools
get deterministic values. Only ``load_settings`` reads the files and the environment, handing
its sources to the model through :func:`installed_sources`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from nsm_forwarder.config.fields import (
    FaultPlan,
    GoBool,
    GoDuration,
    Int,
    IPAddress,
    LogLevel,
    NonEmptyPath,
    NonEmptyStr,
    PathComponent,
    SocketType,
)

__all__ = ["Settings", "installed_sources"]

# A thread-safe hand-over of the per-call sources from load_settings to settings_customise_sources.
_LOAD_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...] | None] = ContextVar(
    "nsm_forwarder_config_sources", default=None
)


@contextmanager
def installed_sources(sources: tuple[PydanticBaseSettingsSource, ...]) -> Iterator[None]:
    """installed_sources - within the block, ``Settings(...)`` also reads ``sources`` (in order,
    after its keyword arguments); for :func:`nsm_forwarder.config.load_settings` only."""
    token = _LOAD_SOURCES.set(sources)
    try:
        yield
    finally:
        _LOAD_SOURCES.reset(token)


class Settings(BaseSettings):
    """Settings - the forwarder configuration (build it with :func:`load_settings`).

    Each field's ``validation_alias`` is its environment variable. Frozen: derive a changed copy
    with ``model_copy(update=...)`` only in tests (it skips validation).
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        case_sensitive=True,
        validate_default=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    # --- upstream settings (spec §4.1), upstream env names ----------------------------------
    name: PathComponent = Field(
        "kernel-forwarder",
        validation_alias="FORWARDER_NAME",
        description=(
            "Forwarder name registered with nsmd; also names the state dir, so no '/'. "
            "(Upstream's kernel forwarder always calls itself kernel-forwarder.)"
        ),
    )
    socket: NonEmptyStr = Field(
        "/var/lib/networkservicemesh/nsm-vppagent.forwarder.sock",
        validation_alias="FORWARDER_SOCKET",
        description=(
            "Address the forwarder gRPC server listens on: a socket path for unix, "
            "host:port for tcp. nsmd dials it as a unix socket path."
        ),
    )
    socket_type: SocketType = Field(
        "unix",
        validation_alias="FORWARDER_SOCKET_TYPE",
        description="Network of the forwarder socket: unix or tcp (tcp only works without nsmd).",
    )
    base_dir: NonEmptyPath = Field(
        Path("/var/lib/networkservicemesh/"),
        validation_alias="NSM_BASEDIR",
        description="NSM base (workspace) directory shared with nsmd (note: NSM_BASEDIR).",
    )
    registrar_socket: NonEmptyStr = Field(
        "/var/lib/networkservicemesh/nsm.forwarder-registrar.io.sock",
        validation_alias="FORWARDER_REGISTRAR_SOCKET",
        description="Address of nsmd's forwarder registrar service.",
    )
    registrar_socket_type: SocketType = Field(
        "unix",
        validation_alias="FORWARDER_REGISTRAR_SOCKET_TYPE",
        description="Network of the registrar socket: unix or tcp.",
    )
    metrics_enabled: GoBool = Field(
        False,
        validation_alias="METRICS_COLLECTOR_ENABLED",
        description=(
            "Send interface metrics to nsmd as cross-connect events every metrics_period "
            "(/metrics is always served). Go bool; unlike upstream, an invalid value is an error."
        ),
    )
    metrics_period: GoDuration = Field(
        timedelta(seconds=2),
        validation_alias="METRICS_COLLECTOR_REQUEST_PERIOD",
        description=(
            "Interface counter collection period (for /metrics, and metrics events when enabled), "
            "a Go duration > 0. Unlike upstream, an invalid value is an error."
        ),
    )
    src_ip: IPAddress = Field(
        validation_alias="NSM_FORWARDER_SRC_IP",
        description=(
            "Required. The node's IP address (IPv4 or IPv6), advertised as src_ip of the "
            "remote mechanisms."
        ),
        json_schema_extra={"hint": "the node's IP address"},
    )
    liveness_interval: GoDuration = Field(
        timedelta(seconds=1),
        validation_alias="CROSS_CONNECT_LIVENESS_CHECK_INTERVAL",
        description=(
            "Interval of the pod-netns liveness check (an end whose pod is gone is reported DOWN), "
            "a Go duration > 0. Unlike upstream, an empty or invalid value is an error."
        ),
    )
    insecure: GoBool = Field(
        False,
        validation_alias="INSECURE",
        description=(
            "Plaintext gRPC instead of SPIFFE mTLS; must match nsmd. Go bool; unlike "
            "upstream, an invalid value is an error."
        ),
    )
    tracer_enabled: GoBool = Field(
        False,
        validation_alias="TRACER_ENABLED",
        description=(
            "OpenTelemetry spans for every Request and Close (frontend, actor, worker), sent by "
            "OTLP/gRPC to otlp_endpoint. Go bool; unlike upstream (Jaeger, default true), off by "
            "default, and an invalid value is an error."
        ),
    )
    otlp_endpoint: NonEmptyStr = Field(
        "http://localhost:4317",
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description=(
            "With tracer_enabled: the OTLP/gRPC collector spans go to (the OpenTelemetry "
            "variable; http:// plaintext, https:// TLS)."
        ),
    )

    # --- our own settings, NSM_FORWARDER_<NAME> ------------------------------------------------
    driver: Literal["kernel", "vpp"] = Field(
        "kernel",
        validation_alias="NSM_FORWARDER_DRIVER",
        description=(
            "Data-plane driver: kernel (netlink) or vpp (VPP's binary API; VPP runs beside the "
            "forwarder)."
        ),
    )
    workers: Int = Field(
        2,
        ge=1,
        le=64,
        validation_alias="NSM_FORWARDER_WORKERS",
        description="Number of data-plane worker processes (1..64).",
    )
    state_dir: NonEmptyPath | None = Field(
        None,
        validation_alias="NSM_FORWARDER_STATE_DIR",
        description=(
            "Directory of the crash-safe cross-connect store (a journal); unset means "
            "<base_dir>/forwarder-state/<name>."
        ),
    )
    health_host: NonEmptyStr = Field(
        "0.0.0.0",
        validation_alias="NSM_FORWARDER_HEALTH_HOST",
        description="Address of the HTTP probes (/liveness, /readiness) and /metrics.",
    )
    health_port: Int = Field(
        5555,
        ge=0,
        le=65535,
        validation_alias="NSM_FORWARDER_HEALTH_PORT",
        description="Port of the HTTP probes and /metrics (0 = pick a free port).",
    )
    log_level: LogLevel = Field(
        "INFO",
        validation_alias="NSM_FORWARDER_LOG_LEVEL",
        description="Log level: DEBUG, INFO, WARNING or ERROR (any case; WARN = WARNING).",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        validation_alias="NSM_FORWARDER_LOG_FORMAT",
        description=(
            "Log format: text (readable lines) or json (one JSON object a line, for log "
            "pipelines; the cross-connect id in its field xcon_id)."
        ),
    )
    grpc_reflection: GoBool = Field(
        False,
        validation_alias="NSM_FORWARDER_GRPC_REFLECTION",
        description=(
            "Serve gRPC server reflection on the forwarder socket (for grpcurl and the like)."
        ),
    )
    mtu: Int = Field(
        16000,
        ge=68,
        le=65535,
        validation_alias="NSM_FORWARDER_MTU",
        description="MTU of the local veth pairs (68..65535; upstream's kernel forwarder: 16000).",
    )
    vxlan_port: Int = Field(
        4789,
        ge=1,
        le=65535,
        validation_alias="NSM_FORWARDER_VXLAN_PORT",
        description=(
            "UDP port of VXLAN tunnels (IANA 4789, as VPP forwarders use; upstream's kernel "
            "forwarder used the kernel default 8472 and could not talk to VPP)."
        ),
    )
    vpp_api_socket: NonEmptyPath = Field(
        Path("/run/vpp/api.sock"),
        validation_alias="NSM_FORWARDER_VPP_API_SOCKET",
        description="driver vpp: VPP's binary API socket (socksvr socket-name).",
    )
    vpp_api_dir: NonEmptyPath = Field(
        Path("/usr/share/vpp/api"),
        validation_alias="NSM_FORWARDER_VPP_API_DIR",
        description="driver vpp: directory of the running VPP's .api.json files.",
    )
    vpp_stats_socket: NonEmptyPath = Field(
        Path("/run/vpp/stats.sock"),
        validation_alias="NSM_FORWARDER_VPP_STATS_SOCKET",
        description="driver vpp: VPP's stats segment socket (statseg socket-name), for metrics.",
    )
    vpp_uplink: str = Field(
        "",
        validation_alias="NSM_FORWARDER_VPP_UPLINK",
        description=(
            "driver vpp: name of an existing VPP interface VXLAN tunnels leave by; empty (the "
            "default): an af_packet interface on the egress interface, with its address."
        ),
    )
    vpp_connect_timeout: GoDuration = Field(
        timedelta(seconds=10),
        validation_alias="NSM_FORWARDER_VPP_CONNECT_TIMEOUT",
        description="driver vpp: how long a worker tries to reach VPP's API socket.",
    )
    allow_vhost: GoBool = Field(
        True,
        validation_alias="FORWARDER_ALLOW_VHOST",
        description=(
            "driver vpp: kernel-interface ends are VPP taps where /dev/vhost-net exists, unless "
            "this is false; else a veth with an af_packet interface (upstream variable)."
        ),
    )
    wireguard_backend: Literal["auto", "kernel", "userspace"] = Field(
        "auto",
        validation_alias="NSM_FORWARDER_WIREGUARD_BACKEND",
        description=(
            "How WIREGUARD tunnels are built: auto (the kernel's WireGuard module where the kernel "
            "has one, else userspace wireguard-go), kernel or userspace (start-up is refused when "
            "the one asked for cannot work)."
        ),
    )
    reregister_interval: GoDuration = Field(
        timedelta(seconds=5),
        validation_alias="NSM_FORWARDER_REREGISTER_INTERVAL",
        description=(
            "Retry/re-registration interval with nsmd, a duration > 0 (upstream's 30s is too slow)."
        ),
    )
    operation_timeout: GoDuration = Field(
        timedelta(seconds=10),
        validation_alias="NSM_FORWARDER_OPERATION_TIMEOUT",
        description=(
            "How long a worker may take for one data-plane operation, a duration > 0 (starting "
            "the workers may take 3 times as long, at least 30s)."
        ),
    )
    registrar_timeout: GoDuration = Field(
        timedelta(seconds=5),
        validation_alias="NSM_FORWARDER_REGISTRAR_TIMEOUT",
        description="Deadline of one registration RPC to nsmd, a duration > 0.",
    )
    max_restarts: Int = Field(
        5,
        ge=1,
        le=1000,
        validation_alias="NSM_FORWARDER_MAX_RESTARTS",
        description=(
            "Restart intensity limit: more than this many actor or worker restarts within "
            "restart_window make the forwarder exit non-zero (Kubernetes restarts the pod)."
        ),
    )
    restart_window: GoDuration = Field(
        timedelta(seconds=10),
        validation_alias="NSM_FORWARDER_RESTART_WINDOW",
        description="The window of the restart intensity limit, a duration > 0.",
    )
    faults: FaultPlan = Field(
        "",
        validation_alias="NSM_FORWARDER_FAULTS",
        description=(
            "Fault plan for fault-injection tests, e.g. 'worker-1:crash:after=3,"
            "driver:delay=200ms' (see docs/faults.md); empty (the default) injects nothing."
        ),
    )

    # --- transport security and the local surface (issue 14) ----------------------------------
    spiffe_endpoint_socket: NonEmptyStr = Field(
        "unix:///run/spire/sockets/agent.sock",
        validation_alias="SPIFFE_ENDPOINT_SOCKET",
        description=(
            "The SPIFFE Workload API (SPIRE agent) socket, unix:///<path>, the source of the "
            "X509-SVIDs for mTLS when INSECURE is false and no TLS files are set (the variable "
            "go-spiffe and py-spiffe read)."
        ),
    )
    tls_cert_file: str = Field(
        "",
        validation_alias="NSM_FORWARDER_TLS_CERT_FILE",
        description=(
            "File-based mTLS (no SPIRE): PEM certificate chain, leaf first; with tls_key_file and "
            "tls_ca_file. Re-read when it changes. Empty (the default): SVIDs from the Workload "
            "API."
        ),
    )
    tls_key_file: str = Field(
        "",
        validation_alias="NSM_FORWARDER_TLS_KEY_FILE",
        description="File-based mTLS: the PEM private key of tls_cert_file.",
    )
    tls_ca_file: str = Field(
        "",
        validation_alias="NSM_FORWARDER_TLS_CA_FILE",
        description="File-based mTLS: the PEM trust bundle peers' certificates must chain to.",
    )
    tls_allowed_ids: str = Field(
        "",
        validation_alias="NSM_FORWARDER_TLS_ALLOWED_IDS",
        description=(
            "Peer SPIFFE IDs accepted over mTLS, comma- or space-separated; spiffe://<trust "
            "domain> admits a whole trust domain. Empty (the default, as upstream): any peer whose "
            "certificate chains to the trust bundle."
        ),
    )
    socket_group: str = Field(
        "",
        validation_alias="NSM_FORWARDER_SOCKET_GROUP",
        description=(
            "Group (name or number) of the forwarder's unix socket, which is created mode 0660; "
            "empty (the default): the forwarder's own group."
        ),
    )

    # --- bounds (issue 14): what one client can make the forwarder hold ------------------------
    max_message_size: Int = Field(
        4 * 1024 * 1024,
        ge=1024,
        le=2**31 - 1,
        validation_alias="NSM_FORWARDER_MAX_MESSAGE_SIZE",
        description=(
            "Largest gRPC message the forwarder accepts, in bytes (1024..2147483647; default "
            "4 MiB, gRPC's own); a bigger one is refused with RESOURCE_EXHAUSTED."
        ),
    )
    max_concurrent_rpcs: Int = Field(
        1024,
        ge=1,
        validation_alias="NSM_FORWARDER_MAX_CONCURRENT_RPCS",
        description=(
            "Request and Close calls served at once; one more is refused with RESOURCE_EXHAUSTED "
            "(retriable)."
        ),
    )
    max_monitor_subscribers: Int = Field(
        64,
        ge=1,
        validation_alias="NSM_FORWARDER_MAX_MONITOR_SUBSCRIBERS",
        description=(
            "Open MonitorCrossConnects streams at most (and as many MonitorMechanisms and "
            "grpc.health.v1.Health/Watch streams); one more is refused with RESOURCE_EXHAUSTED."
        ),
    )
    subscriber_queue: Int = Field(
        1024,
        ge=2,
        validation_alias="NSM_FORWARDER_SUBSCRIBER_QUEUE",
        description=(
            "Cross-connect events a MonitorCrossConnects subscriber may fall behind; a slower "
            "one is dropped with RESOURCE_EXHAUSTED (it subscribes again for a fresh state)."
        ),
    )
    max_cross_connects: Int = Field(
        10000,
        ge=0,
        validation_alias="NSM_FORWARDER_MAX_CROSS_CONNECTS",
        description=(
            "Live cross-connects at most (0 = no limit); a Request for a new id beyond it is "
            "refused with RESOURCE_EXHAUSTED, a Request for a known id (an update) still works."
        ),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init kwargs), then whatever load_settings installed; nothing else."""
        return (init_settings, *(_LOAD_SOURCES.get() or ()))

    # --- derived values -------------------------------------------------------------------------
    @property
    def resolved_state_dir(self) -> Path:
        """state_dir, or <base_dir>/forwarder-state/<name> when unset."""
        if self.state_dir is not None:
            return self.state_dir
        return self.base_dir / "forwarder-state" / self.name

    @property
    def socket_path(self) -> str:
        """The forwarder socket as given (a filesystem path when socket_type is unix)."""
        return self.socket

    @property
    def registrar_socket_path(self) -> str:
        """The registrar socket as given (a filesystem path when its type is unix)."""
        return self.registrar_socket

    @property
    def listen_address(self) -> str:
        """gRPC server address: ``unix:<path>`` or ``host:port``."""
        return _grpc_address(self.socket_type, self.socket)

    @property
    def registrar_address(self) -> str:
        """gRPC dial target of the registrar: ``unix:<path>`` or ``host:port``."""
        return _grpc_address(self.registrar_socket_type, self.registrar_socket)

    @property
    def log_level_number(self) -> int:
        """log_level as a :mod:`logging` level number."""
        return int(logging.getLevelName(self.log_level))


def _grpc_address(kind: str, address: str) -> str:
    return f"unix:{address}" if kind == "unix" else address

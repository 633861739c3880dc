"""Settings: the forwarder's whole configuration as one typed, frozen model.

Layers (later wins):

1. the field defaults below;
2. the shipped ``forwarder.toml`` next to this module (package data; it repeats the defaults and
   documents every own setting);
3. the user config file: the ``config_file`` argument, else ``$NSM_FORWARDER_CONFIG``, else
   ``/etc/nsm-forwarder/forwarder.toml`` if it exists (an explicitly named file must exist; an
   empty name means "no user config file");
4. the environment: each field has exactly one variable, given as the field's
   ``validation_alias`` (the upstream names of spec §4.1, or ``NSM_FORWARDER_<NAME>`` for our own);
5. CLI flags, keyed by field name (``None`` means "flag not given").

Only :func:`load_settings` reads layers 2-4. Constructing ``Settings(...)`` directly validates
exactly the keyword arguments given (by field name) on top of the defaults, reading neither the
environment nor any file, so tests and tools get deterministic values.

Upstream differences (deliberate):

* upstream silently falls back to the default on an invalid bool or duration; we raise
  :class:`SettingsError` instead (an empty string is invalid too);
* an environment variable set to the empty string counts as set ("is set" semantics), so an empty
  name, socket, base dir or source IP is an error here as well (upstream fails its sanity check).

Errors: every problem raises :class:`SettingsError`, whose ``str()`` is one line naming the
setting, its env var and flag, the expected form and the bad value.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from fractions import Fraction
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from nsm_forwarder.config.faults import FaultPlanError, parse_plan

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "SHIPPED_CONFIG_PATH",
    "Settings",
    "SettingsError",
    "as_log_dict",
    "describe",
    "env_var",
    "flag_name",
    "format_go_duration",
    "load_settings",
    "parse_go_bool",
    "parse_go_duration",
]

#: Environment variable naming the user config file.
CONFIG_ENV_VAR = "NSM_FORWARDER_CONFIG"
#: User config file read when neither ``config_file`` nor ``$NSM_FORWARDER_CONFIG`` is given.
DEFAULT_CONFIG_PATH = Path("/etc/nsm-forwarder/forwarder.toml")
#: The shipped config file (package data): the defaults, each setting documented.
SHIPPED_CONFIG_PATH = Path(__file__).parent / "forwarder.toml"

_OWN_PREFIX = "NSM_FORWARDER_"
_REDACTED = "**********"


class SettingsError(Exception):
    """SettingsError - the configuration is invalid; ``str()`` is one line fit for the user.

    Attributes (``None`` when not applicable): ``setting`` (field name), ``env`` (its env var),
    ``flag`` (its CLI flag), ``value`` (the rejected input), ``source`` (where it came from:
    ``"flag"``, ``"environment"``, ``"config file <path>"``, ``"default"``).
    """

    def __init__(
        self,
        message: str,
        *,
        setting: str | None = None,
        env: str | None = None,
        flag: str | None = None,
        value: Any = None,
        source: str | None = None,
    ) -> None:
        super().__init__(_one_line(message))
        self.setting = setting
        self.env = env
        self.flag = flag
        self.value = value
        self.source = source


# --------------------------------------------------------------------------------------------
# Go compatible parsing

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_GO_BOOL_HELP = "1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"

# Nanoseconds per unit, as in Go's time.ParseDuration (µ is U+00B5, μ is U+03BC).
_GO_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_GO_DURATION_SEGMENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_GO_DURATION_HELP = "a Go duration (number + unit ns/us/ms/s/m/h, e.g. '2s', '1500ms', '1m30s')"
_MAX_NS = (1 << 63) - 1


def parse_go_bool(text: str) -> bool:
    """parse_go_bool - Go's strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False.

    Raises ValueError for anything else (including the empty string and surrounding spaces).
    """
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}: expected one of {_GO_BOOL_HELP}")


def _go_duration_ns(text: str) -> int:
    """Nanoseconds of a Go duration string; ValueError(reason) like Go's time.ParseDuration."""
    s = text
    negative = False
    if s[:1] in ("+", "-"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise ValueError("empty duration" if text == "" else "missing number")
    total = 0
    pos = 0
    while pos < len(s):
        m = _GO_DURATION_SEGMENT.match(s, pos)
        assert m is not None  # the pattern matches the empty string
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise ValueError(f"expected a number at {s[pos:]!r}")
        if not unit:
            raise ValueError("missing unit")
        if unit not in _GO_UNITS:
            raise ValueError(f"unknown unit {unit!r}")
        scale = _GO_UNITS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        if total > _MAX_NS + (1 if negative else 0):
            raise ValueError("overflow (more than about 292 years)")
        pos = m.end()
    return -total if negative else total


def parse_go_duration(text: str) -> timedelta:
    """parse_go_duration - Go's time.ParseDuration ("2s", "1500ms", "1m30s", "300us", "-1.5h").

    The result has microsecond resolution (timedelta), so nanoseconds are rounded to the nearest
    microsecond. Raises ValueError naming the text and the reason.
    """
    try:
        ns = _go_duration_ns(text)
    except ValueError as e:
        raise ValueError(f"invalid duration {text!r}: {e}; expected {_GO_DURATION_HELP}") from None
    return timedelta(microseconds=round(Fraction(ns, 1000)))


def format_go_duration(value: timedelta) -> str:
    """format_go_duration - Go's Duration.String for a timedelta ("2s", "1m30s", "1.5ms", "2h0m0s").

    Uses the ASCII unit "us" for microseconds; :func:`parse_go_duration` reads the result back.
    """
    us = value // timedelta(microseconds=1)
    sign = "-" if us < 0 else ""
    us = abs(us)
    if us == 0:
        return "0s"
    if us < 1_000:
        return f"{sign}{us}us"
    if us < 1_000_000:
        return f"{sign}{_decimal(us, 1_000)}ms"
    minutes, rest = divmod(us, 60_000_000)
    hours, minutes = divmod(minutes, 60)
    seconds = f"{_decimal(rest, 1_000_000)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


# --------------------------------------------------------------------------------------------
# Field types. Each before-validator accepts the already typed value (flags, direct use), a
# string (environment, TOML) and, where natural, a TOML number; anything else is rejected with a
# message starting "must be ...", which becomes the "expected" part of the SettingsError.


def _to_go_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in _GO_TRUE:
            return True
        if value in _GO_FALSE:
            return False
    raise ValueError(f"must be a Go boolean ({_GO_BOOL_HELP})")


def _to_duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        try:
            ns = _go_duration_ns(value)
        except ValueError as e:
            raise ValueError(f"must be {_GO_DURATION_HELP}: {e}") from None
        if 0 < ns < 500:
            raise ValueError("must be at least 1us (microsecond resolution)")
        return timedelta(microseconds=round(Fraction(ns, 1000)))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"must be {_GO_DURATION_HELP} or a finite number of seconds")
        try:
            return timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"must be {_GO_DURATION_HELP} (number too large)") from None
    raise ValueError(f"must be {_GO_DURATION_HELP} or a number of seconds")


def _positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be > 0")
    return value


def _non_empty(value: Any) -> Any:
    if value == "":
        raise ValueError("must not be empty")
    return value


def _non_empty_path(value: Any) -> Any:
    if value == "":
        raise ValueError("must be a non-empty path")
    return value


def _path_component(value: str) -> str:
    if "/" in value or "\x00" in value or value in (".", ".."):
        raise ValueError("must not contain '/' or NUL and must not be '.' or '..'")
    return value


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    return value


def _to_ip(value: Any) -> Any:
    if isinstance(value, IPv4Address | IPv6Address):
        parsed: IPv4Address | IPv6Address = value
    elif isinstance(value, str) and "%" in value:
        raise ValueError("must be the node's IPv4 or IPv6 address without a zone")
    elif isinstance(value, str):
        try:
            parsed = ip_address(value)
        except ValueError:
            raise ValueError("must be the node's IPv4 or IPv6 address") from None
    else:
        raise ValueError("must be the node's IPv4 or IPv6 address")
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped  # Go's net.IP treats ::ffff:a.b.c.d as the IPv4 address
    return parsed


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(value: Any) -> Any:
    level = value.upper() if isinstance(value, str) else None
    level = "WARNING" if level == "WARN" else level
    if level not in _LOG_LEVELS:
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR (any case)")
    return level


def _fault_plan(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be a fault plan string such as 'worker-1:crash:after=3'")
    try:
        parse_plan(value)
    except FaultPlanError as exc:
        raise ValueError(str(exc)) from None
    return value


GoBool = Annotated[bool, BeforeValidator(_to_go_bool)]
GoDuration = Annotated[timedelta, BeforeValidator(_to_duration), AfterValidator(_positive_duration)]
NonEmptyStr = Annotated[str, BeforeValidator(_non_empty)]
NonEmptyPath = Annotated[Path, BeforeValidator(_non_empty_path)]
Int = Annotated[int, BeforeValidator(_no_bool)]
SocketType = Literal["unix", "tcp"]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_log_level)]
IPAddress = Annotated[IPv4Address | IPv6Address, BeforeValidator(_to_ip)]


# --------------------------------------------------------------------------------------------
# The model

# A thread-safe hand-over of the per-call sources from load_settings to settings_customise_sources.
_LOAD_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...] | None] = ContextVar(
    "nsm_forwarder_config_sources", default=None
)


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
    name: Annotated[NonEmptyStr, AfterValidator(_path_component)] = Field(
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
        True,
        validation_alias="TRACER_ENABLED",
        description=(
            "Jaeger tracing (accepted for compatibility, not used). Go bool; unlike upstream, "
            "an invalid value is an error."
        ),
    )

    # --- our own settings, NSM_FORWARDER_<NAME> ------------------------------------------------
    driver: Literal["kernel"] = Field(
        "kernel",
        validation_alias="NSM_FORWARDER_DRIVER",
        description="Data-plane driver; only kernel for now.",
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
            "Directory of the crash-safe cross-connect store (SQLite); unset means "
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
    faults: Annotated[str, BeforeValidator(_fault_plan)] = Field(
        "",
        validation_alias="NSM_FORWARDER_FAULTS",
        description=(
            "Fault plan for fault-injection tests, e.g. 'worker-1:crash:after=3,"
            "driver:delay=200ms' (see docs/faults.md); empty (the default) injects nothing."
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


# --------------------------------------------------------------------------------------------
# Field metadata helpers


def _field(name: str, cls: type[BaseSettings] = Settings) -> FieldInfo:
    try:
        return cls.model_fields[name]
    except KeyError:
        raise KeyError(f"no setting named {name!r}") from None


def env_var(name: str, cls: type[BaseSettings] = Settings) -> str:
    """env_var - the environment variable of setting ``name`` (e.g. ``FORWARDER_SOCKET``)."""
    alias = _field(name, cls).validation_alias
    return alias if isinstance(alias, str) else _OWN_PREFIX + name.upper()


def flag_name(name: str) -> str:
    """flag_name - the CLI flag of setting ``name`` (``src_ip`` -> ``--src-ip``)."""
    return "--" + name.replace("_", "-")


def _extra(field: FieldInfo) -> Mapping[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _is_secret(field: FieldInfo, value: Any) -> bool:
    return bool(_extra(field).get("secret")) or isinstance(value, SecretStr | SecretBytes)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_go_duration(value)
    if value is None:
        return ""
    return str(value)


def describe() -> list[tuple[str, str, str, str]]:
    """describe - (setting, env var, default, description) of every setting, in field order."""
    rows = []
    for name, field in Settings.model_fields.items():
        if field.is_required():
            default = "(required)"
        elif name == "state_dir":
            default = "<base_dir>/forwarder-state/<name>"
        else:
            default = _format(field.default)
        rows.append((name, env_var(name), default, field.description or ""))
    return rows


def as_log_dict(s: Settings) -> dict[str, str]:
    """as_log_dict - the resolved settings as strings for one log line, secrets redacted.

    ``state_dir`` shows the resolved directory. A field is secret if its ``json_schema_extra``
    has ``"secret": True`` or its value is a SecretStr/SecretBytes.
    """
    out: dict[str, str] = {}
    for name, field in type(s).model_fields.items():
        value = s.resolved_state_dir if name == "state_dir" else getattr(s, name)
        if _is_secret(field, value):
            out[name] = _REDACTED if value not in (None, "") else ""
        else:
            out[name] = _format(value)
    return out


# --------------------------------------------------------------------------------------------
# Sources


class _EnvSource(EnvSettingsSource):
    """The environment: exactly one variable per field (its alias), from a given mapping."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(
            settings_cls,
            case_sensitive=True,
            env_prefix="",
            env_ignore_empty=False,
            env_parse_none_str=None,
            env_parse_enums=False,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._environ)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = env_var(field_name, self.settings_cls)
        return self.env_vars.get(name), name, False


class _TomlSource(TomlConfigSettingsSource):
    """One TOML config file; keys are field names; unreadable files and unknown keys raise."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path = path
        try:
            super().__init__(settings_cls, toml_file=path)
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"invalid config file {path}: {e}", source=self.label) from None
        except (OSError, UnicodeDecodeError) as e:
            raise SettingsError(f"cannot read config file {path}: {e}", source=self.label) from None
        known = list(settings_cls.model_fields)
        for key in self.toml_data:
            if key not in settings_cls.model_fields:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "valid keys: " + ", ".join(known)
                raise SettingsError(
                    f"unknown setting {key!r} in config file {path}: {hint}",
                    setting=key,
                    source=self.label,
                )

    @property
    def label(self) -> str:
        return f"config file {self.path}"


@contextmanager
def _installed(sources: tuple[PydanticBaseSettingsSource, ...]) -> Iterator[None]:
    token = _LOAD_SOURCES.set(sources)
    try:
        yield
    finally:
        _LOAD_SOURCES.reset(token)


def _user_config(
    config_file: str | Path | None, environ: Mapping[str, str]
) -> tuple[Path | None, str]:
    """(path or None, what named it). Explicit names must exist; "" disables the user file."""
    if config_file is not None:
        given, origin = str(config_file), "the config_file argument"
    elif CONFIG_ENV_VAR in environ:
        given, origin = environ[CONFIG_ENV_VAR], CONFIG_ENV_VAR
    else:
        path = DEFAULT_CONFIG_PATH
        return (path, "the default location") if path.exists() else (None, "")
    if given == "":
        return None, origin
    path = Path(given).expanduser()
    if not path.exists():
        raise SettingsError(f"config file {path} does not exist (named by {origin})")
    return path, origin


# --------------------------------------------------------------------------------------------
# Building


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> Settings:
    """load_settings - build the Settings from defaults < shipped file < user file < env < flags.

    ``flags`` maps field names to values (``None`` = not given); ``env=None`` means os.environ;
    ``config_file`` overrides ``$NSM_FORWARDER_CONFIG`` and the default location.

    Raises SettingsError (one line) for: an unknown flag key, a missing explicitly named config
    file, an unreadable or malformed config file, an unknown config key, a missing required
    setting and an invalid value (the first one, in field order).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    fields = Settings.model_fields
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    for key in given:
        if key not in fields:
            raise SettingsError(f"unknown setting {key!r} given as a flag", setting=key)

    layers: list[tuple[str, Mapping[str, Any]]] = [("flag", given)]
    env_values = {n: environ[env_var(n)] for n in fields if env_var(n) in environ}
    layers.append(("environment", env_values))
    toml_sources: list[_TomlSource] = []
    user_path, _ = _user_config(config_file, environ)
    if user_path is not None:
        toml_sources.append(_TomlSource(Settings, user_path))
    if SHIPPED_CONFIG_PATH.is_file():
        toml_sources.append(_TomlSource(Settings, SHIPPED_CONFIG_PATH))
    layers.extend((src.label, src.toml_data) for src in toml_sources)

    with _installed((_EnvSource(Settings, environ), *toml_sources)):
        try:
            return Settings(**given)
        except ValidationError as e:
            raise _settings_error(e, layers) from None


def _settings_error(
    exc: ValidationError, layers: list[tuple[str, Mapping[str, Any]]]
) -> SettingsError:
    by_alias = {env_var(n): n for n in Settings.model_fields}
    err = exc.errors(include_url=False)[0]
    loc = err["loc"]
    key = str(loc[0]) if loc else ""
    name = by_alias.get(key, key)
    if name not in Settings.model_fields:  # not expected: sources only emit known keys
        return SettingsError(f"invalid settings: {err['msg']} at {key!r}")
    env, flag = env_var(name), flag_name(name)
    field = Settings.model_fields[name]

    if err["type"] == "missing":
        hint = _extra(field).get("hint") or f"a valid {name}"
        return SettingsError(
            f"missing required setting {name}: set {env} to {hint}",
            setting=name,
            env=env,
            flag=flag,
        )

    source = next((label for label, values in layers if name in values), "default")
    value = err.get("input")
    where = f" [from {source}]" if source.startswith("config file") else ""
    shown = _REDACTED if _is_secret(field, value) else _short_repr(value)
    return SettingsError(
        f"invalid setting {name} ({env} / {flag}): {_expected(err)}, got {shown}{where}",
        setting=name,
        env=env,
        flag=flag,
        value=value,
        source=source,
    )


def _expected(err: Mapping[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, k = bounds[kind]
        return f"must be {op} {ctx.get(k)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be an integer"
    msg = str(err.get("msg", "is invalid"))
    return (
        "must be " + msg[len("Input should be ") :] if msg.startswith("Input should be ") else msg
    )


def _short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text

"""The field types of the Settings model: pydantic ``Annotated`` types with their validators.

Each before-validator accepts the already typed value (flags, direct use), a string
(environment, TOML) and, where natural, a TOML number; anything else is rejected with a
message starting "must be ...", which becomes the "expected" part of the SettingsError
(see :mod:`nsm_forwarder.config.errors`).

Types: :data:`GoBool`, :data:`GoDuration` (> 0), :data:`NonEmptyStr`, :data:`PathComponent`,
:data:`NonEmptyPath`, :data:`Int` (no bools), :data:`SocketType`, :data:`LogLevel`,
:data:`IPAddress` and :data:`FaultPlan`.
"""

from __future__ import annotations

import math
from contextlib import suppress
from datetime import timedelta
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator

from nsm_forwarder.config.faults import FaultPlanError, parse_plan
from nsm_forwarder.config.gotypes import (
    GO_BOOL_HELP,
    GO_DURATION_HELP,
    go_duration_ns,
    parse_go_bool,
    timedelta_from_ns,
)

__all__ = [
    "FaultPlan",
    "GoBool",
    "GoDuration",
    "IPAddress",
    "Int",
    "LogLevel",
    "NonEmptyPath",
    "NonEmptyStr",
    "PathComponent",
    "SocketType",
]


def _to_go_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        with suppress(ValueError):
            return parse_go_bool(value)
    raise ValueError(f"must be a Go boolean ({GO_BOOL_HELP})")


def _to_duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        try:
            ns = go_duration_ns(value)
        except ValueError as e:
            raise ValueError(f"must be {GO_DURATION_HELP}: {e}") from None
        if 0 < ns < 500:
            raise ValueError("must be at least 1us (microsecond resolution)")
        return timedelta_from_ns(ns)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"must be {GO_DURATION_HELP} or a finite number of seconds")
        try:
            return timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"must be {GO_DURATION_HELP} (number too large)") from None
    raise ValueError(f"must be {GO_DURATION_HELP} or a number of seconds")


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


#: A Go boolean (strconv.ParseBool spellings) or a bool.
GoBool = Annotated[bool, BeforeValidator(_to_go_bool)]
#: A Go duration string, a number of seconds or a timedelta; must be > 0.
GoDuration = Annotated[timedelta, BeforeValidator(_to_duration), AfterValidator(_positive_duration)]
#: A string that is not empty.
NonEmptyStr = Annotated[str, BeforeValidator(_non_empty)]
#: A non-empty string usable as one path component (no '/', no NUL, not '.' or '..').
PathComponent = Annotated[NonEmptyStr, AfterValidator(_path_component)]
#: A path that is not the empty string.
NonEmptyPath = Annotated[Path, BeforeValidator(_non_empty_path)]
#: An integer (a bool is rejected rather than taken as 0/1).
Int = Annotated[int, BeforeValidator(_no_bool)]
#: The network of a gRPC socket.
SocketType = Literal["unix", "tcp"]
#: A log level name, any case, WARN meaning WARNING; stored upper case.
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_log_level)]
#: An IPv4 or IPv6 address without a zone; IPv4-mapped IPv6 becomes the IPv4 address.
IPAddress = Annotated[IPv4Address | IPv6Address, BeforeValidator(_to_ip)]
#: A fault plan string (syntax in :mod:`nsm_forwarder.config.faults`), kept as given.
FaultPlan = Annotated[str, BeforeValidator(_fault_plan)]

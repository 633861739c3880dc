"""Naming and showing settings: each setting's env var and CLI flag, the settings table, log dict.

Holds :func:`env_var` and :func:`flag_name` (a setting's environment variable and flag),
:func:`describe` (every setting with its env var, default and description), :func:`as_log_dict`
(the resolved values as strings, secrets redacted) and the secret masking they share with the
error messages: :func:`is_secret`, :data:`REDACTED` and :func:`field_extra`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from nsm_forwarder.config.gotypes import format_go_duration
from nsm_forwarder.config.settings import Settings

__all__ = [
    "REDACTED",
    "as_log_dict",
    "describe",
    "env_var",
    "field_extra",
    "flag_name",
    "format_value",
    "is_secret",
]

_OWN_PREFIX = "NSM_FORWARDER_"
#: What a secret value is shown as (in logs and error messages).
REDACTED = "**********"


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


def field_extra(field: FieldInfo) -> Mapping[str, Any]:
    """field_extra - the field's ``json_schema_extra`` dict (``"secret"``, ``"hint"``), or {}."""
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def is_secret(field: FieldInfo, value: Any) -> bool:
    """is_secret - the field is marked ``"secret": True`` or the value is a SecretStr/Bytes."""
    return bool(field_extra(field).get("secret")) or isinstance(value, SecretStr | SecretBytes)


def format_value(value: Any) -> str:
    """format_value - a setting's value as text (Go bools and durations, "" for None)."""
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
            default = format_value(field.default)
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
        if is_secret(field, value):
            out[name] = REDACTED if value not in (None, "") else ""
        else:
            out[name] = format_value(value)
    return out

"""Settings errors: :class:`SettingsError` and the one-line messages made from pydantic's errors.

Every configuration problem raises :class:`SettingsError`, whose ``str()`` is one line naming the
setting, its env var and flag, the expected form and the bad value (secrets redacted), and the
config file it came from. :func:`settings_error` turns the first error of a pydantic
ValidationError into that SettingsError, given the :data:`Layers` the values came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from nsm_forwarder.config.describe import REDACTED, env_var, field_extra, flag_name, is_secret
from nsm_forwarder.config.settings import Settings

__all__ = ["Layers", "SettingsError", "settings_error"]

#: (source label, the values it gave by field name), highest precedence first; the labels are
#: ``"flag"``, ``"environment"`` and ``"config file <path>"``.
Layers = list[tuple[str, Mapping[str, Any]]]


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


def settings_error(exc: ValidationError, layers: Layers) -> SettingsError:
    """settings_error - the SettingsError for the first error of ``exc`` (in field order).

    A missing required setting says which env var to set; an invalid value says what is expected
    and what was given, with ``[from config file <path>]`` when a config file gave it.
    """
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
        hint = field_extra(field).get("hint") or f"a valid {name}"
        return SettingsError(
            f"missing required setting {name}: set {env} (or {flag}) to {hint}",
            setting=name,
            env=env,
            flag=flag,
        )

    source = next((label for label, values in layers if name in values), "default")
    value = err.get("input")
    where = f" [from {source}]" if source.startswith("config file") else ""
    shown = REDACTED if is_secret(field, value) else _short_repr(value)
    return SettingsError(
        f"invalid setting {name} ({env} / {flag}): {_expected(err)}, got {shown}{where}",
        setting=name,
        env=env,
        flag=flag,
        value=value,
        source=source,
    )


def _expected(err: Mapping[str, Any]) -> str:
    """The "must be ..." part of the message for one pydantic error."""
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

"""Loading the settings: the environment and TOML sources, the user config file, load_settings.

Layers (later wins):

1. the field defaults of :class:`~nsm_forwarder.config.settings.Settings`;
2. the shipped ``forwarder.toml`` next to this module (package data; it repeats the defaults and
   documents every own setting), :data:`SHIPPED_CONFIG_PATH`;
3. the user config file: the ``config_file`` argument, else ``$NSM_FORWARDER_CONFIG``
   (:data:`CONFIG_ENV_VAR`), else ``/etc/nsm-forwarder/forwarder.toml``
   (:data:`DEFAULT_CONFIG_PATH`) if it exists (an explicitly named file must exist; an empty
   name means "no user config file");
4. the environment: each field has exactly one variable, given as the field's
   ``validation_alias`` (the upstream names of spec §4.1, or ``NSM_FORWARDER_<NAME>`` for our own);
5. CLI flags, keyed by field name (``None`` means "flag not given").

Only :func:`load_settings` and :func:`explain_settings` (which says where each value came from,
for ``nsm-forwarder config show``) read layers 2-4.

Upstream differences (deliberate):

* upstream silently falls back to the default on an invalid bool or duration; we raise
  :class:`~nsm_forwarder.config.errors.SettingsError` instead (an empty string is invalid too);
* an environment variable set to the empty string counts as set ("is set" semantics), so an empty
  name, socket, base dir or source IP is an error here as well (upstream fails its sanity check).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, TomlConfigSettingsSource

from nsm_forwarder.config.describe import (
    REDACTED,
    as_log_dict,
    env_var,
    flag_name,
    format_value,
    is_secret,
)
from nsm_forwarder.config.errors import Layers, SettingsError, settings_error
from nsm_forwarder.config.settings import Settings, installed_sources

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "SHIPPED_CONFIG_PATH",
    "Sourced",
    "explain_settings",
    "load_settings",
]

#: Environment variable naming the user config file.
CONFIG_ENV_VAR = "NSM_FORWARDER_CONFIG"
#: User config file read when neither ``config_file`` nor ``$NSM_FORWARDER_CONFIG`` is given.
DEFAULT_CONFIG_PATH = Path("/etc/nsm-forwarder/forwarder.toml")
#: The shipped config file (package data): the defaults, each setting documented.
SHIPPED_CONFIG_PATH = Path(__file__).parent / "forwarder.toml"


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


def _layers(
    flags: Mapping[str, Any] | None, environ: Mapping[str, str], config_file: str | Path | None
) -> tuple[dict[str, Any], Layers, list[_TomlSource]]:
    """(the given flags, every layer highest first, the TOML sources user file first)."""
    fields = Settings.model_fields
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    for key in given:
        if key not in fields:
            raise SettingsError(f"unknown setting {key!r} given as a flag", setting=key)

    layers: Layers = [("flag", given)]
    env_values = {n: environ[env_var(n)] for n in fields if env_var(n) in environ}
    layers.append(("environment", env_values))
    toml_sources: list[_TomlSource] = []
    user_path, _ = _user_config(config_file, environ)
    if user_path is not None:
        toml_sources.append(_TomlSource(Settings, user_path))
    if SHIPPED_CONFIG_PATH.is_file():
        toml_sources.append(_TomlSource(Settings, SHIPPED_CONFIG_PATH))
    layers.extend((src.label, src.toml_data) for src in toml_sources)
    return given, layers, toml_sources


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
    given, layers, toml_sources = _layers(flags, environ, config_file)
    with installed_sources((_EnvSource(Settings, environ), *toml_sources)):
        try:
            return Settings(**given)
        except ValidationError as e:
            raise settings_error(e, layers) from None


@dataclass(frozen=True)
class Sourced:
    """One row of :func:`explain_settings`: a setting, its value as shown, and its source."""

    name: str
    value: str
    """The value as the forwarder uses it (secrets masked); "" when unset."""
    source: str
    """``default``, ``shipped file``, ``file <path>``, ``env <VAR>``, ``flag --<name>`` or, for
    a required setting given nowhere, ``unset (required)``."""


def explain_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> tuple[list[Sourced], SettingsError | None]:
    """explain_settings - every setting (field order) with its effective value and the layer it
    came from, as :func:`load_settings` would build them, and the error that stops them (None
    when they are valid; then the values are the validated ones, else the raw ones given).

    Raises SettingsError only when the layers themselves cannot be read (an unknown flag, a
    missing, unreadable or malformed config file, an unknown config key)."""
    environ: Mapping[str, str] = os.environ if env is None else env
    _, layers, _ = _layers(flags, environ, config_file)
    failure: SettingsError | None = None
    shown: dict[str, str] = {}
    try:
        shown = as_log_dict(load_settings(flags, environ, config_file))
    except SettingsError as exc:
        failure = exc
    rows = []
    for name, field in Settings.model_fields.items():
        label, raw = next(
            ((label, values[name]) for label, values in layers if name in values),
            ("default", None if field.is_required() else field.default),
        )
        if name in shown:
            value = shown[name]
        elif is_secret(field, raw):
            value = REDACTED if raw not in (None, "") else ""
        else:
            value = format_value(raw)
        if label == "default" and field.is_required():
            label = "unset (required)"
        rows.append(Sourced(name, value, _source_label(label, name)))
    return rows, failure


def _source_label(layer: str, name: str) -> str:
    if layer == "flag":
        return f"flag {flag_name(name)}"
    if layer == "environment":
        return f"env {env_var(name)}"
    if layer == f"config file {SHIPPED_CONFIG_PATH}":
        return "shipped file"
    if layer.startswith("config file "):
        return "file " + layer[len("config file ") :]
    return layer

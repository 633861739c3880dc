"""nsm_forwarder.config - the typed forwarder settings and the one function that builds them.

Modules, each importing only the ones before it:

* :mod:`~nsm_forwarder.config.gotypes` - Go-compatible bool and duration parsing and formatting;
* :mod:`~nsm_forwarder.config.fields` - the field types (pydantic validators) of the model;
* :mod:`~nsm_forwarder.config.settings` - the :class:`Settings` model;
* :mod:`~nsm_forwarder.config.describe` - env var and flag names, :func:`describe`,
  :func:`as_log_dict`, secret masking;
* :mod:`~nsm_forwarder.config.errors` - :class:`SettingsError` and its one-line messages;
* :mod:`~nsm_forwarder.config.loader` - the environment and TOML sources, :func:`load_settings`.

:mod:`~nsm_forwarder.config.faults` (the fault plan syntax) stands apart.
"""

from nsm_forwarder.config.describe import as_log_dict, describe, env_var, flag_name
from nsm_forwarder.config.errors import SettingsError
from nsm_forwarder.config.gotypes import format_go_duration, parse_go_bool, parse_go_duration
from nsm_forwarder.config.loader import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    SHIPPED_CONFIG_PATH,
    Sourced,
    explain_settings,
    load_settings,
)
from nsm_forwarder.config.settings import Settings

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "SHIPPED_CONFIG_PATH",
    "Settings",
    "SettingsError",
    "Sourced",
    "as_log_dict",
    "describe",
    "env_var",
    "explain_settings",
    "flag_name",
    "format_go_duration",
    "load_settings",
    "parse_go_bool",
    "parse_go_duration",
]

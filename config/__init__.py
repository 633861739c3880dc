"""nsm_forwarder.config - the typed forwarder settings and the one function that builds them."""

from nsm_forwarder.config.settings import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    SHIPPED_CONFIG_PATH,
    Settings,
    SettingsError,
    as_log_dict,
    describe,
    env_var,
    flag_name,
    format_go_duration,
    load_settings,
    parse_go_bool,
    parse_go_duration,
)

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

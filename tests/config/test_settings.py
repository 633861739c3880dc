"""Tests of nsm_forwarder.config.settings: layers, upstream env names, Go parsing, errors."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, SecretStr, ValidationError

from nsm_forwarder.config import settings as settings_mod
from nsm_forwarder.config.settings import (
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

SRC = {"NSM_FORWARDER_SRC_IP": "10.1.2.3"}


@pytest.fixture(autouse=True)
def _no_etc_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never read the machine's /etc/nsm-forwarder/forwarder.toml."""
    missing = tmp_path_factory.mktemp("etc") / "forwarder.toml"
    monkeypatch.setattr(settings_mod, "DEFAULT_CONFIG_PATH", missing)


def load(env: dict[str, str] | None = None, **kwargs: Any) -> Settings:
    return load_settings(env={**SRC, **(env or {})}, **kwargs)


def write(tmp_path: Path, text: str, name: str = "forwarder.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(**kwargs: Any) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults ---------------------------------------------------------------------------------


def test_load_settings_defaults() -> None:
    s = load()
    assert s.name == "kernel-forwarder"
    assert s.socket == "/var/lib/networkservicemesh/nsm-vppagent.forwarder.sock"
    assert s.socket_type == "unix"
    assert s.base_dir == Path("/var/lib/networkservicemesh/")
    assert s.registrar_socket == "/var/lib/networkservicemesh/nsm.forwarder-registrar.io.sock"
    assert s.registrar_socket_type == "unix"
    assert s.metrics_enabled is False
    assert s.metrics_period == timedelta(seconds=2)
    assert s.src_ip == IPv4Address("10.1.2.3")
    assert s.liveness_interval == timedelta(seconds=1)
    assert s.insecure is False
    assert s.tracer_enabled is True
    assert s.driver == "kernel"
    assert s.workers == 2
    assert s.state_dir is None
    assert s.health_host == "0.0.0.0"
    assert s.health_port == 5555
    assert s.log_level == "INFO"
    assert s.mtu == 16000
    assert s.reregister_interval == timedelta(seconds=5)
    assert s.operation_timeout == timedelta(seconds=10)
    assert s.registrar_timeout == timedelta(seconds=5)


def test_shipped_config_file_repeats_the_field_defaults() -> None:
    data = tomllib.loads(SHIPPED_CONFIG_PATH.read_text())
    defaults = Settings(src_ip="10.0.0.1")
    own = {
        "driver",
        "workers",
        "health_host",
        "health_port",
        "log_level",
        "mtu",
        "vxlan_port",
        "wireguard_backend",
        "reregister_interval",
        "operation_timeout",
        "registrar_timeout",
        "max_restarts",
        "restart_window",
        "faults",
    }
    assert set(data) == own
    from_file = Settings(src_ip="10.0.0.1", **data)
    assert from_file == defaults


def test_shipped_config_file_documents_every_own_setting() -> None:
    text = SHIPPED_CONFIG_PATH.read_text()
    for name in Settings.model_fields:
        assert f"\n{name} =" in text or f"\n# {name} =" in text, name


def test_Settings_is_frozen() -> None:
    s = load()
    with pytest.raises(ValidationError):
        s.workers = 3  # type: ignore[misc]


def test_Settings_direct_construction_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSM_FORWARDER_WORKERS", "9")
    assert Settings(src_ip="10.0.0.1").workers == 2


def test_load_settings_env_none_means_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSM_FORWARDER_SRC_IP", "10.9.9.9")
    monkeypatch.setenv("NSM_FORWARDER_WORKERS", "9")
    monkeypatch.delenv("NSM_FORWARDER_CONFIG", raising=False)
    s = load_settings()
    assert (s.src_ip, s.workers) == (IPv4Address("10.9.9.9"), 9)


# --- upstream env names ----------------------------------------------------------------------

UPSTREAM = [
    ("FORWARDER_NAME", "fwd-1", "name", "fwd-1"),
    ("FORWARDER_SOCKET", "/run/f.sock", "socket", "/run/f.sock"),
    ("FORWARDER_SOCKET_TYPE", "tcp", "socket_type", "tcp"),
    ("NSM_BASEDIR", "/srv/nsm/", "base_dir", Path("/srv/nsm")),
    ("FORWARDER_REGISTRAR_SOCKET", "/run/r.sock", "registrar_socket", "/run/r.sock"),
    ("FORWARDER_REGISTRAR_SOCKET_TYPE", "tcp", "registrar_socket_type", "tcp"),
    ("METRICS_COLLECTOR_ENABLED", "T", "metrics_enabled", True),
    ("METRICS_COLLECTOR_REQUEST_PERIOD", "1m30s", "metrics_period", timedelta(seconds=90)),
    ("NSM_FORWARDER_SRC_IP", "192.0.2.7", "src_ip", IPv4Address("192.0.2.7")),
    (
        "CROSS_CONNECT_LIVENESS_CHECK_INTERVAL",
        "1500ms",
        "liveness_interval",
        timedelta(milliseconds=1500),
    ),
    ("INSECURE", "true", "insecure", True),
    ("TRACER_ENABLED", "0", "tracer_enabled", False),
]


@pytest.mark.parametrize(("env", "raw", "field", "expected"), UPSTREAM)
def test_load_settings_upstream_env_name_maps_to_field(
    env: str, raw: str, field: str, expected: object
) -> None:
    assert env_var(field) == env
    assert getattr(load({env: raw}), field) == expected


def test_every_upstream_field_is_covered() -> None:
    upstream = {row[2] for row in UPSTREAM}
    own = {n for n in Settings.model_fields if env_var(n) == f"NSM_FORWARDER_{n.upper()}"}
    assert upstream | own == set(Settings.model_fields)
    assert upstream & own == {"src_ip"}  # both the upstream name and our prefix pattern


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("driver", "kernel", "kernel"),
        ("workers", "8", 8),
        ("state_dir", "/tmp/st", Path("/tmp/st")),
        ("health_host", "127.0.0.1", "127.0.0.1"),
        ("health_port", "0", 0),
        ("log_level", "debug", "DEBUG"),
        ("log_level", "warn", "WARNING"),
        ("mtu", "1500", 1500),
        ("reregister_interval", "250ms", timedelta(milliseconds=250)),
        ("operation_timeout", "1m", timedelta(minutes=1)),
        ("registrar_timeout", "300us", timedelta(microseconds=300)),
    ],
)
def test_load_settings_own_env_name_maps_to_field(field: str, raw: str, expected: object) -> None:
    name = f"NSM_FORWARDER_{field.upper()}"
    assert env_var(field) == name
    assert getattr(load({name: raw}), field) == expected


def test_load_settings_ignores_unknown_prefixed_env_vars() -> None:
    assert load({"NSM_FORWARDER_NO_SUCH_THING": "x", "workers": "9"}).workers == 2


def test_load_settings_empty_string_counts_as_set() -> None:
    message = error(env={**SRC, "FORWARDER_SOCKET": ""})
    assert message.startswith("invalid setting socket (FORWARDER_SOCKET / --socket): ")
    assert "must not be empty" in message


# --- src_ip ------------------------------------------------------------------------------------


def test_load_settings_missing_src_ip_is_a_clear_error() -> None:
    assert error(env={}) == (
        "missing required setting src_ip: set NSM_FORWARDER_SRC_IP to the node's IP address"
    )


def test_load_settings_empty_src_ip_is_a_clear_error() -> None:
    message = error(env={"NSM_FORWARDER_SRC_IP": ""})
    assert message == (
        "invalid setting src_ip (NSM_FORWARDER_SRC_IP / --src-ip): "
        "must be the node's IPv4 or IPv6 address, got ''"
    )


@pytest.mark.parametrize("bad", ["10.0.0", "node-1", "fe80::1%eth0", " 10.0.0.1"])
def test_load_settings_bad_src_ip_names_env_var(bad: str) -> None:
    message = error(env={"NSM_FORWARDER_SRC_IP": bad})
    assert message.startswith("invalid setting src_ip (NSM_FORWARDER_SRC_IP / --src-ip): must be")
    assert repr(bad) in message


def test_load_settings_ipv6_src_ip() -> None:
    s = load({"NSM_FORWARDER_SRC_IP": "fd00:10::7"})
    assert s.src_ip == IPv6Address("fd00:10::7")


def test_load_settings_ipv4_mapped_src_ip_is_ipv4() -> None:
    assert load({"NSM_FORWARDER_SRC_IP": "::ffff:10.0.0.9"}).src_ip == IPv4Address("10.0.0.9")


# --- Go parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_go_bool_true(text: str) -> None:
    assert parse_go_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_go_bool_false(text: str) -> None:
    assert parse_go_bool(text) is False


@pytest.mark.parametrize("text", ["", "yes", "no", "tRUE", " true", "2", "on"])
def test_parse_go_bool_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid boolean"):
        parse_go_bool(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2s", timedelta(seconds=2)),
        ("1500ms", timedelta(milliseconds=1500)),
        ("1m30s", timedelta(seconds=90)),
        ("300us", timedelta(microseconds=300)),
        ("300\u00b5s", timedelta(microseconds=300)),
        ("300\u03bcs", timedelta(microseconds=300)),
        ("1.5h", timedelta(minutes=90)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("2h45m0.5s", timedelta(hours=2, minutes=45, milliseconds=500)),
        ("1500ns", timedelta(microseconds=2)),  # rounded to microseconds
        ("0", timedelta(0)),
        ("-1.5s", timedelta(seconds=-1.5)),
        ("+3s", timedelta(seconds=3)),
    ],
)
def test_parse_go_duration_valid(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("5", "missing unit"),
        ("2x", "unknown unit 'x'"),
        ("2 s", "unknown unit ' s'"),
        ("s", "expected a number"),
        (".s", "expected a number"),
        ("-", "missing number"),
        ("1d", "unknown unit 'd'"),
        ("3000000h", "overflow"),
    ],
)
def test_parse_go_duration_invalid(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_go_duration(text)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        timedelta(seconds=2),
        timedelta(seconds=90),
        timedelta(hours=2),
        timedelta(microseconds=300),
        timedelta(milliseconds=1500),
        timedelta(microseconds=1001),
        timedelta(seconds=-3),
        timedelta(0),
    ],
)
def test_format_go_duration_round_trips(value: timedelta) -> None:
    assert parse_go_duration(format_go_duration(value)) == value


def test_format_go_duration_looks_like_go() -> None:
    assert format_go_duration(timedelta(seconds=90)) == "1m30s"
    assert format_go_duration(timedelta(hours=2)) == "2h0m0s"
    assert format_go_duration(timedelta(milliseconds=1500)) == "1.5s"
    assert format_go_duration(timedelta(microseconds=1500)) == "1.5ms"


@pytest.mark.parametrize("env", ["METRICS_COLLECTOR_ENABLED", "INSECURE", "TRACER_ENABLED"])
@pytest.mark.parametrize("raw", ["yes", ""])
def test_load_settings_invalid_go_bool_names_env_var(env: str, raw: str) -> None:
    message = error(env={**SRC, env: raw})
    assert f"({env} / --" in message
    assert "must be a Go boolean" in message
    assert message.endswith(f"got {raw!r}")


@pytest.mark.parametrize(
    "env",
    [
        "METRICS_COLLECTOR_REQUEST_PERIOD",
        "CROSS_CONNECT_LIVENESS_CHECK_INTERVAL",
        "NSM_FORWARDER_REREGISTER_INTERVAL",
        "NSM_FORWARDER_OPERATION_TIMEOUT",
        "NSM_FORWARDER_REGISTRAR_TIMEOUT",
    ],
)
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2x", "must be a Go duration"),
        ("", "empty"),
        ("5", "missing unit"),
        ("0s", "must be > 0"),
        ("-1s", "must be > 0"),
        ("1ns", "at least 1us"),
    ],
)
def test_load_settings_invalid_duration_names_env_var(env: str, raw: str, reason: str) -> None:
    message = error(env={**SRC, env: raw})
    assert f"({env} / --" in message
    assert reason in message
    assert message.endswith(f"got {raw!r}")


# --- layers ---------------------------------------------------------------------------------


def test_load_settings_precedence_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'workers = 3\nmtu = 1500\nhealth_port = 7000\nlog_level = "debug"\n')
    env = {"NSM_FORWARDER_WORKERS": "4", "NSM_FORWARDER_MTU": "9000"}

    s = load(config_file=path)
    assert (s.workers, s.mtu, s.health_port, s.log_level) == (3, 1500, 7000, "DEBUG")

    s = load(env, config_file=path)
    assert (s.workers, s.mtu, s.health_port) == (4, 9000, 7000)

    s = load(env, config_file=str(path), flags={"workers": 5, "mtu": None, "health_port": None})
    assert (s.workers, s.mtu, s.health_port) == (5, 9000, 7000)


def test_load_settings_file_overrides_shipped_file_and_upstream_keys(tmp_path: Path) -> None:
    path = write(tmp_path, 'operation_timeout = "30s"\nname = "fwd-a"\nsrc_ip = "10.0.0.5"\n')
    s = load_settings(env={}, config_file=path)
    assert s.operation_timeout == timedelta(seconds=30)
    assert s.name == "fwd-a"
    assert s.src_ip == IPv4Address("10.0.0.5")
    assert load_settings(env=SRC, config_file=path).src_ip == IPv4Address("10.1.2.3")


def test_load_settings_duration_as_number_of_seconds_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "reregister_interval = 2.5\nregistrar_timeout = 7\n")
    s = load(config_file=path)
    assert s.reregister_interval == timedelta(seconds=2.5)
    assert s.registrar_timeout == timedelta(seconds=7)


def test_load_settings_config_file_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, "workers = 6\n")
    assert load({"NSM_FORWARDER_CONFIG": str(path)}).workers == 6


def test_load_settings_argument_beats_config_env(tmp_path: Path) -> None:
    a = write(tmp_path, "workers = 6\n", "a.toml")
    b = write(tmp_path, "workers = 7\n", "b.toml")
    assert load({"NSM_FORWARDER_CONFIG": str(a)}, config_file=b).workers == 7


def test_load_settings_default_config_path_is_used_if_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "workers = 11\n")
    monkeypatch.setattr(settings_mod, "DEFAULT_CONFIG_PATH", path)
    assert load().workers == 11
    assert load({"NSM_FORWARDER_CONFIG": ""}).workers == 2  # "" disables the user file


def test_load_settings_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    message = error(env=SRC, config_file=missing)
    assert message == f"config file {missing} does not exist (named by the config_file argument)"
    message = error(env={**SRC, "NSM_FORWARDER_CONFIG": str(missing)})
    assert "does not exist (named by NSM_FORWARDER_CONFIG)" in message


def test_load_settings_unknown_config_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "wrkers = 3\n")
    message = error(env=SRC, config_file=path)
    assert message == f"unknown setting 'wrkers' in config file {path}: did you mean 'workers'?"


def test_load_settings_env_name_as_config_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, 'FORWARDER_NAME = "x"\n')
    assert "unknown setting 'FORWARDER_NAME'" in error(env=SRC, config_file=path)


def test_load_settings_table_in_config_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[forwarder]\nworkers = 3\n")
    assert "unknown setting 'forwarder'" in error(env=SRC, config_file=path)


def test_load_settings_malformed_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, "workers = \n")
    assert error(env=SRC, config_file=path).startswith(f"invalid config file {path}: ")


def test_load_settings_bad_value_in_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "workers = 0\n")
    message = error(env=SRC, config_file=path)
    assert message == (
        "invalid setting workers (NSM_FORWARDER_WORKERS / --workers): must be >= 1, got 0"
        f" [from config file {path}]"
    )


def test_load_settings_unknown_flag_is_rejected() -> None:
    assert error(env=SRC, flags={"wokers": 3}) == "unknown setting 'wokers' given as a flag"


# --- values and messages ----------------------------------------------------------------------


def test_load_settings_workers_zero_is_one_line_error() -> None:
    message = error(env={**SRC, "NSM_FORWARDER_WORKERS": "0"})
    assert message == (
        "invalid setting workers (NSM_FORWARDER_WORKERS / --workers): must be >= 1, got '0'"
    )


def test_SettingsError_carries_the_details() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env=SRC, flags={"workers": 65})
    e = info.value
    assert (e.setting, e.env, e.flag, e.value, e.source) == (
        "workers",
        "NSM_FORWARDER_WORKERS",
        "--workers",
        65,
        "flag",
    )
    assert str(e).endswith("must be <= 64, got 65")


@pytest.mark.parametrize(
    ("env", "raw", "expected"),
    [
        ("NSM_FORWARDER_WORKERS", "two", "must be an integer"),
        ("NSM_FORWARDER_HEALTH_PORT", "65536", "must be <= 65535"),
        ("NSM_FORWARDER_MTU", "67", "must be >= 68"),
        ("NSM_FORWARDER_DRIVER", "vpp", "must be 'kernel'"),
        ("NSM_FORWARDER_LOG_LEVEL", "loud", "must be DEBUG, INFO, WARNING or ERROR"),
        ("FORWARDER_SOCKET_TYPE", "udp", "must be 'unix' or 'tcp'"),
        ("FORWARDER_REGISTRAR_SOCKET_TYPE", "UNIX", "must be 'unix' or 'tcp'"),
        ("FORWARDER_NAME", "", "must not be empty"),
        ("FORWARDER_NAME", "a/b", "must not contain '/'"),
        ("NSM_BASEDIR", "", "must be a non-empty path"),
        ("NSM_FORWARDER_STATE_DIR", "", "must be a non-empty path"),
    ],
)
def test_load_settings_invalid_value_message(env: str, raw: str, expected: str) -> None:
    message = error(env={**SRC, env: raw})
    assert message.startswith("invalid setting ")
    assert f"({env} / --" in message
    assert f": {expected}" in message
    assert message.endswith(f"got {raw!r}")


def test_load_settings_error_value_stays_on_one_line() -> None:
    message = error(env={**SRC, "NSM_FORWARDER_WORKERS": "1\n2"})
    assert "got '1\\n2'" in message


def test_load_settings_flags_accept_typed_values() -> None:
    s = load(
        flags={
            "src_ip": IPv6Address("::1"),
            "operation_timeout": timedelta(seconds=3),
            "state_dir": Path("/x"),
            "insecure": True,
        }
    )
    assert (s.src_ip, s.operation_timeout, s.state_dir, s.insecure) == (
        IPv6Address("::1"),
        timedelta(seconds=3),
        Path("/x"),
        True,
    )


def test_load_settings_flags_reject_bool_for_int() -> None:
    assert "must be an integer, got True" in error(env=SRC, flags={"workers": True})


# --- derived values ----------------------------------------------------------------------------


def test_Settings_resolved_state_dir_default() -> None:
    s = load({"NSM_BASEDIR": "/srv/nsm/", "FORWARDER_NAME": "fwd-x"})
    assert s.resolved_state_dir == Path("/srv/nsm/forwarder-state/fwd-x")


def test_Settings_resolved_state_dir_explicit() -> None:
    assert load({"NSM_FORWARDER_STATE_DIR": "/data/st"}).resolved_state_dir == Path("/data/st")


def test_Settings_addresses() -> None:
    s = load({"FORWARDER_SOCKET_TYPE": "tcp", "FORWARDER_SOCKET": "0.0.0.0:9500"})
    assert s.listen_address == "0.0.0.0:9500"
    assert s.socket_path == "0.0.0.0:9500"
    assert s.registrar_address == "unix:/var/lib/networkservicemesh/nsm.forwarder-registrar.io.sock"
    assert s.log_level_number == 20


# --- describe / as_log_dict ---------------------------------------------------------------------


def test_describe_lists_every_setting() -> None:
    rows = describe()
    assert [r[0] for r in rows] == list(Settings.model_fields)
    table = {r[0]: r for r in rows}
    assert table["src_ip"][1:3] == ("NSM_FORWARDER_SRC_IP", "(required)")
    assert table["metrics_period"][1:3] == ("METRICS_COLLECTOR_REQUEST_PERIOD", "2s")
    assert table["metrics_enabled"][2] == "false"
    assert table["workers"][1:3] == ("NSM_FORWARDER_WORKERS", "2")
    assert all(r[3] for r in rows)


def test_flag_name() -> None:
    assert flag_name("src_ip") == "--src-ip"
    assert flag_name("workers") == "--workers"


def test_as_log_dict_resolved_strings() -> None:
    d = as_log_dict(load({"NSM_FORWARDER_SRC_IP": "fd00::1"}))
    assert set(d) == set(Settings.model_fields)
    assert d["src_ip"] == "fd00::1"
    assert d["metrics_period"] == "2s"
    assert d["insecure"] == "false"
    assert d["state_dir"] == "/var/lib/networkservicemesh/forwarder-state/kernel-forwarder"
    assert all(isinstance(v, str) for v in d.values())


class _WithSecrets(Settings):
    token: str = Field("hunter2", description="t", json_schema_extra={"secret": True})
    password: SecretStr = Field(SecretStr("pw"), description="p")


def test_as_log_dict_redacts_secret_fields() -> None:
    d = as_log_dict(_WithSecrets(src_ip="10.0.0.1"))
    assert d["token"] == "**********"
    assert d["password"] == "**********"
    assert "hunter2" not in str(d)

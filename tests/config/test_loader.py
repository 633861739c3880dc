"""Tests of nsm_forwarder.config.loader and .errors: layers, config files, one-line errors."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from nsm_forwarder.config import loader as loader_mod
from nsm_forwarder.config.errors import SettingsError
from nsm_forwarder.config.loader import load_settings
from tests.config.conftest import SRC, error, load, write

# --- src_ip ------------------------------------------------------------------------------------


def test_load_settings_missing_src_ip_is_a_clear_error() -> None:
    assert error(env={}) == (
        "missing required setting src_ip: set NSM_FORWARDER_SRC_IP (or --src-ip) to the node's "
        "IP address"
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


# --- Go values in the environment ---------------------------------------------------------------


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
    monkeypatch.setattr(loader_mod, "DEFAULT_CONFIG_PATH", path)
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
        ("NSM_FORWARDER_DRIVER", "dpdk", "must be 'kernel' or 'vpp'"),
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

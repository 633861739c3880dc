"""Tests of nsm_forwarder.config.settings and .describe: defaults, env names, derived values."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from pydantic import Field, SecretStr, ValidationError

from nsm_forwarder.config.describe import as_log_dict, describe, env_var, flag_name
from nsm_forwarder.config.loader import SHIPPED_CONFIG_PATH, load_settings
from nsm_forwarder.config.settings import Settings
from tests.config.conftest import SRC, error, load

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
    assert s.tracer_enabled is False
    assert s.otlp_endpoint == "http://localhost:4317"
    assert s.log_format == "text"
    assert s.grpc_reflection is False
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
        "log_format",
        "grpc_reflection",
        "mtu",
        "vxlan_port",
        "wireguard_backend",
        "vpp_api_socket",
        "vpp_api_dir",
        "vpp_stats_socket",
        "vpp_connect_timeout",
        "vpp_uplink",
        "reregister_interval",
        "operation_timeout",
        "registrar_timeout",
        "max_restarts",
        "restart_window",
        "faults",
        "tls_cert_file",
        "tls_key_file",
        "tls_ca_file",
        "tls_allowed_ids",
        "socket_group",
        "max_message_size",
        "max_concurrent_rpcs",
        "max_monitor_subscribers",
        "subscriber_queue",
        "max_cross_connects",
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
    ("FORWARDER_ALLOW_VHOST", "false", "allow_vhost", False),
    (
        "SPIFFE_ENDPOINT_SOCKET",
        "unix:///run/a.sock",
        "spiffe_endpoint_socket",
        "unix:///run/a.sock",
    ),
    # OpenTelemetry's own variable
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317", "otlp_endpoint", "http://otel:4317"),
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

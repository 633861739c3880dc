"""Shared fixture and helpers of the config tests: never read /etc, load with a src_ip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nsm_forwarder.config import loader as loader_mod
from nsm_forwarder.config.errors import SettingsError
from nsm_forwarder.config.loader import load_settings
from nsm_forwarder.config.settings import Settings

SRC = {"NSM_FORWARDER_SRC_IP": "10.1.2.3"}


@pytest.fixture(autouse=True)
def _no_etc_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never read the machine's /etc/nsm-forwarder/forwarder.toml."""
    missing = tmp_path_factory.mktemp("etc") / "forwarder.toml"
    monkeypatch.setattr(loader_mod, "DEFAULT_CONFIG_PATH", missing)


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

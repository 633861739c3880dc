from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def plaintext_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests talk plaintext (INSECURE=true), as their forwarders do; the client's mTLS
    (the default, INSECURE=false) is tested in tests/tls."""
    monkeypatch.setenv("INSECURE", "true")

"""Log formats: readable text by default, JSON lines on request, the cross-connect id a field."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest

from nsm_forwarder.actors.logs import XCON_ID, setup_logging


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def test_logs_json_lines_carry_the_cross_connect_id(
    root_restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("DEBUG", "json", process="worker-1")
    log = logging.getLogger("nsm_forwarder.test")

    def actor_thread() -> None:  # as a ConnectionActor: the id set once for its thread
        XCON_ID.set("xc-7")
        log.info("request id=%s ok", "xc-7")

    thread = threading.Thread(target=actor_thread)
    thread.start()
    thread.join()
    log.warning("no id here")
    log.error("given as extra", extra={"xcon_id": "xc-8"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("with a traceback")
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    first = records[0]
    assert first["message"] == "request id=xc-7 ok" and first["xcon_id"] == "xc-7"
    assert (first["level"], first["logger"], first["process"]) == (
        "INFO",
        "nsm_forwarder.test",
        "worker-1",
    )
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert "xcon_id" not in records[1]
    assert records[2]["xcon_id"] == "xc-8"
    assert "ValueError: boom" in records[3]["exception"]


def test_logs_text_by_default(root_restored: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO")
    logging.getLogger("nsm_forwarder.test").info("hello %s", "there")
    line = capsys.readouterr().err.strip()
    assert line.endswith(" INFO nsm_forwarder.test: hello there")
    setup_logging("INFO", "text", process="worker-0")
    logging.getLogger("nsm_forwarder.test").info("hi")
    assert capsys.readouterr().err.strip().endswith(" INFO worker-0 nsm_forwarder.test: hi")

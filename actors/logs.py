"""Logging set-up of the forwarder's processes: readable text (the default) or JSON lines, and
the cross-connect id as a field of every record about one.

- :data:`XCON_ID` - the id of the cross-connect the current thread or task works on (None if
  none): a ConnectionActor's thread sets it once (it serves one id), the Frontend per call, a
  worker per call (the pool sends the id with the call).
- :func:`setup_logging` - the root handler on stderr: ``text`` as before
  (``time LEVEL logger: message``), ``json`` one object a line with ``time`` (RFC 3339, UTC),
  ``level``, ``logger``, ``process`` (``main`` or ``worker-N``), ``message``, ``xcon_id`` when
  known (also from ``extra={"xcon_id": ...}``), ``exception`` with the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

__all__ = ["XCON_ID", "JsonFormatter", "setup_logging"]

#: The cross-connect id the current thread / task works on.
XCON_ID: ContextVar[str | None] = ContextVar("nsm_forwarder_xcon_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _XconIdFilter(logging.Filter):
    """Gives every record ``xcon_id``: the one passed in ``extra``, else :data:`XCON_ID`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "xcon_id", None) is None:
            record.xcon_id = XCON_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line; ``process`` names the forwarder process (main, worker-N)."""

    def __init__(self, process: str = "main") -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": self.process,
            "message": record.getMessage(),
        }
        xcon_id = getattr(record, "xcon_id", None)
        if xcon_id is not None:
            out["xcon_id"] = xcon_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(
    level: str | int, log_format: Literal["text", "json"] = "text", process: str = "main"
) -> None:
    """Replace the root logger's handlers with one on stderr in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_XconIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        prefix = "" if process == "main" else f"{process} "
        handler.setFormatter(
            logging.Formatter(TEXT_FORMAT.replace("%(name)s", prefix + "%(name)s"))
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)

"""The printed and parsed forms of cross-connects and events for the client commands.

Scope:    pure functions, no I/O: the table, summary and event lines the commands print, the
          JSON forms of ``--json`` (the protobuf JSON mapping, proto field names), and the parser
          of a request file.
Entry:    ``summarize``, ``format_table``, ``format_summary``, ``format_event``,
          ``xcon_to_dict``, ``event_to_dict``, ``parse_xcon`` (raises ``BadRequestFile``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import json_format

from nsm_forwarder.proto import connection_pb2, crossconnect_pb2
from nsm_forwarder.proto.crossconnect_pb2 import CrossConnect, CrossConnectEvent

TABLE_COLUMNS = ("ID", "PAYLOAD", "SOURCE", "DESTINATION", "STATE")


class BadRequestFile(Exception):
    """BadRequestFile - the request file could not be read or is not a CrossConnect (exit 2)."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def xcon_to_dict(xcon: CrossConnect) -> dict[str, Any]:
    """The protobuf JSON mapping of ``xcon`` with proto field names (``request`` reads it back)."""
    return json_format.MessageToDict(xcon, preserving_proto_field_name=True)


def event_to_dict(event: CrossConnectEvent) -> dict[str, Any]:
    """``{"type", "cross_connects", "metrics"}`` for one event, every key always present."""
    return {
        "type": crossconnect_pb2.CrossConnectEventType.Name(event.type),
        "cross_connects": {key: xcon_to_dict(x) for key, x in event.cross_connects.items()},
        "metrics": {key: dict(m.metrics) for key, m in event.metrics.items()},
    }


def _state(conn: connection_pb2.Connection) -> str:
    return connection_pb2.State.Name(conn.state)


def _describe_end(xcon: CrossConnect, side: str) -> str:
    """``TYPE name@netnsInode ip`` for a local end, ``TYPE src_ip->dst_ip ip`` for a tunnel."""
    if not xcon.HasField(side):
        return "-"
    conn: connection_pb2.Connection = getattr(xcon, side)
    params = conn.mechanism.parameters
    if "name" in params or "netnsInode" in params:
        where = f"{params.get('name', '?')}@{params.get('netnsInode', '?')}"
    elif "src_ip" in params or "dst_ip" in params:
        where = f"{params.get('src_ip', '?')}->{params.get('dst_ip', '?')}"
    else:
        where = "-"
    ip_context = conn.context.ip_context
    ip = ip_context.src_ip_addr if side == "source" else ip_context.dst_ip_addr
    return f"{conn.mechanism.type or '-'} {where} {ip or '-'}"


def summarize(xcon: CrossConnect) -> dict[str, str]:
    """One table row: id, payload, source, destination and state (``src/dst``, UP or DOWN)."""
    states = [
        _state(getattr(xcon, side)) if xcon.HasField(side) else "-"
        for side in ("source", "destination")
    ]
    return {
        "id": xcon.id,
        "payload": xcon.payload or "-",
        "source": _describe_end(xcon, "source"),
        "destination": _describe_end(xcon, "destination"),
        "state": "/".join(states),
    }


def format_table(xcons: Mapping[str, CrossConnect]) -> str:
    """A fixed-width table of ``xcons`` sorted by key, or a one-line note when there are none."""
    if not xcons:
        return "no cross-connects"
    rows = [TABLE_COLUMNS] + [tuple(summarize(xcons[key]).values()) for key in sorted(xcons)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_summary(xcon: CrossConnect) -> str:
    """``key: value`` lines describing one cross-connect (what ``request`` prints)."""
    summary = summarize(xcon)
    width = max(len(key) for key in summary) + 1
    return "\n".join(f"{key + ':':<{width}} {value}" for key, value in summary.items())


def format_event(event: CrossConnectEvent, at: datetime) -> str:
    """One line: time, type, the ids it carries, any DOWN end, and the metrics keys if present."""
    line = f"{at.isoformat(timespec='milliseconds')} "
    line += crossconnect_pb2.CrossConnectEventType.Name(event.type)
    line += " " + (",".join(sorted(event.cross_connects)) or "-")
    down = [
        f"{key} {side} DOWN"
        for key, xcon in sorted(event.cross_connects.items())
        for side in ("source", "destination")
        if xcon.HasField(side) and getattr(xcon, side).state == connection_pb2.DOWN
    ]
    if down:
        line += " (" + ", ".join(down) + ")"
    if event.metrics:
        line += " metrics=" + ",".join(sorted(event.metrics))
    return line


def parse_xcon(text: str, name: str) -> CrossConnect:
    """Parse ``text`` (protobuf JSON mapping, either field-name style) into a CrossConnect.

    Raises BadRequestFile, with one line naming ``name``, on bad JSON, a non-object or a field
    that does not fit the message.
    """
    try:
        value = json.loads(text)
    except ValueError as err:
        raise BadRequestFile(f"cannot parse {name}: invalid JSON: {err}") from err
    if not isinstance(value, dict):
        raise BadRequestFile(f"cannot parse {name}: expected a JSON object (a CrossConnect)")
    try:
        return json_format.ParseDict(value, CrossConnect())
    except json_format.ParseError as err:
        raise BadRequestFile(
            f"cannot parse {name} as a CrossConnect: {one_line(str(err))}"
        ) from err

"""Message definitions, CRCs and message ids, read from VPP's own ``.api.json`` files.

The serializer is vpp_papi's (``VPPApiJSONFiles.process_json_file`` gives message objects with
``pack``/``unpack``), so the fake packs exactly what ``VPPApiClient`` unpacks. Message ids are
given the way VPP numbers them: the ``memclnt`` messages first, from 1, in file order (the
client's socket transport relies on ``sockclnt_create`` = 15 and ``sockclnt_create_reply`` = 16),
then every other module's messages in blocks. Requests are decoded without vpp_papi's type
conversions (raw addresses, MAC bytes), so a handler sees what VPP's C handler would see.
"""

from __future__ import annotations

import copy
import os
import struct
import threading
from pathlib import Path
from typing import Any

from vpp_papi.vpp_papi import VPPApiJSONFiles
from vpp_papi.vpp_serializer import String, VLAList

ENV_API_DIR = "NSM_TEST_VPP_API_DIR"
_MSGID = struct.Struct(">H")


class UnknownMessage(Exception):
    """A payload whose message id is not in the table."""


def default_api_dir() -> Path:
    """``$NSM_TEST_VPP_API_DIR``, else ``shared/vpp-api`` beside the repository."""
    env = os.environ.get(ENV_API_DIR)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]  # <repo>/tests/vpp/peer/apidefs.py
    return repo.parent / "shared" / "vpp-api"


def _plain(value: Any) -> Any:
    """Named tuples (vpp_papi's unpacked types) to dicts, recursively."""
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {f: _plain(v) for f, v in zip(type(value)._fields, value, strict=True)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class ApiDefs:
    """The message table of one api directory."""

    def __init__(self, api_dir: Path) -> None:
        files = sorted(api_dir.rglob("*.api.json"))
        if not files:
            raise FileNotFoundError(f"no *.api.json under {api_dir}")
        # memclnt first, then the core modules, then the plugins (each sorted by name)
        files.sort(key=lambda p: (p.name != "memclnt.api.json", p.parent.name != "core", p.name))
        self.api_dir = api_dir
        self.files = files
        self.messages: dict[str, Any] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.ids: dict[str, int] = {}
        self.by_id: dict[int, str] = {}
        for path in files:
            with path.open() as f:
                msgs, services = VPPApiJSONFiles.process_json_file(f)
            self.services.update(services)
            for name, msg in msgs.items():
                if name in self.ids:
                    continue
                self.messages[name] = msg
                ident = len(self.ids) + 1
                self.ids[name] = ident
                self.by_id[ident] = name
        self._defaults: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # -- the table the client receives in sockclnt_create_reply ---------------------------
    def crc_name(self, name: str) -> str:
        return f"{name}_{self.messages[name].crc[2:]}"

    def message_table(self) -> list[dict[str, Any]]:
        return [{"index": i, "name": self.crc_name(n)} for n, i in self.ids.items()]

    def api_json(self) -> str:
        """What ``get_api_json`` returns: every module's JSON in one array."""
        return "[\n" + ",".join(p.read_text() for p in self.files) + "]"

    # -- services ----------------------------------------------------------------------------
    def reply_of(self, name: str) -> str | None:
        """The reply (or, for an old-style dump, the details) message of a request."""
        service = self.services.get(name)
        if service is None:
            return None
        reply = service.get("reply")
        return None if reply in (None, "null") else str(reply)

    def is_stream(self, name: str) -> bool:
        return bool(self.services.get(name, {}).get("stream"))

    def stream_msg(self, name: str) -> str | None:
        msg = self.services.get(name, {}).get("stream_msg")
        return None if msg is None else str(msg)

    def has_field(self, name: str, field: str) -> bool:
        return field in self.messages[name].field_by_name

    # -- wire --------------------------------------------------------------------------------
    def decode(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        """(message name, fields) of one payload; raises on anything malformed."""
        (ident,) = _MSGID.unpack_from(payload, 0)
        name = self.by_id.get(ident)
        if name is None:
            raise UnknownMessage(ident)
        msg = self.messages[name]
        if len(payload) < msg.size:
            raise ValueError(f"{name}: {len(payload)} bytes, needs {msg.size}")
        values, _ = msg.unpack(payload, ntc=True)
        return name, {f: _plain(v) for f, v in zip(msg.fields, values, strict=True)}

    def encode(self, name: str, fields: dict[str, Any]) -> bytes:
        msg = self.messages[name]
        data = self._zero(name)
        data.update(fields)
        data["_vl_msg_id"] = self.ids[name]
        for packer in msg.packers:
            if isinstance(packer, VLAList):
                data[packer.length_field] = len(data[packer.name] or [])
            elif isinstance(packer, String) and packer.fixed and data.get(packer.name):
                data[packer.name] = str(data[packer.name])[: packer.limit - 1]
        return bytes(msg.pack(data))

    def _zero(self, name: str) -> dict[str, Any]:
        with self._lock:
            if name not in self._defaults:
                msg = self.messages[name]
                values, _ = msg.unpack(bytes(msg.size + 64), ntc=True)
                self._defaults[name] = {
                    f: _plain(v) for f, v in zip(msg.fields, values, strict=True)
                }
            return copy.deepcopy(self._defaults[name])


_CACHE: dict[Path, ApiDefs] = {}
_CACHE_LOCK = threading.Lock()


def load(api_dir: str | Path | None = None) -> ApiDefs:
    """The (cached) definitions of ``api_dir`` (default: :func:`default_api_dir`)."""
    path = Path(api_dir) if api_dir is not None else default_api_dir()
    path = path.resolve()
    with _CACHE_LOCK:
        if path not in _CACHE:
            _CACHE[path] = ApiDefs(path)
        return _CACHE[path]

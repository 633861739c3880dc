"""One message in, the messages out: decoding, the socket-client messages, fault switches,
handlers, and the bookkeeping the tests read (``calls``, ``unhandled``, ``errors``).

VPP facts kept here: a request whose ``client_index`` names no registration gets no answer
(``vl_api_client_index_to_registration`` returning 0 in every ``REPLY_MACRO``), and the answer
goes to the registration ``client_index`` names; every reply and detail carries the request's
``context``; ``sockclnt_create_reply`` lists ``<name>_<crc>`` of every message with its id;
``sockclnt_delete`` answers ``response`` 1 and then closes the connection
(``src/vlibmemory/socket_api.c``); an id with no handler is dropped (``no handler for msg id``).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.vpp.peer import (  # noqa: F401 - the imports fill HANDLERS
    h_afpacket,
    h_interface,
    h_ip,
    h_memif,
    h_tap,
    h_vxlan,
)
from tests.vpp.peer.apidefs import UnknownMessage
from tests.vpp.peer.errors import Retval
from tests.vpp.peer.handlers import HANDLERS, Ctx, Out
from tests.vpp.peer.server import HANDLE_BIT, Outcome


@dataclass
class _Fail:
    retval: int
    count: int | None  # None: until cleared


class Dispatcher:
    def __init__(
        self,
        ctx: Ctx,
        lock: threading.RLock,
        live: Callable[[int], bool],
        on_change: Callable[[], None],
    ) -> None:
        self.ctx = ctx
        self.defs = ctx.defs
        self.lock = lock
        self.live = live
        self.on_change = on_change
        self.calls: list[str] = []
        self.unhandled: list[str] = []
        self.errors: list[str] = []
        self.client_names: dict[int, str] = {}
        self.fails: dict[str, _Fail] = {}
        self.drops: dict[str, bool] = {}  # name -> after_apply

    # -- fault switches ----------------------------------------------------------------------
    def _known(self, name: str) -> None:
        if name not in self.defs.ids:
            raise ValueError(f"no message {name!r} in {self.defs.api_dir}")

    def fail(self, name: str, retval: int, count: int | None) -> None:
        self._known(name)
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None: until cleared)")
        with self.lock:
            self.fails[name] = _Fail(int(retval), count)

    def drop_on(self, name: str, after_apply: bool) -> None:
        self._known(name)
        with self.lock:
            self.drops[name] = after_apply

    def clear_faults(self) -> None:
        with self.lock:
            self.fails.clear()
            self.drops.clear()

    # -- one message -------------------------------------------------------------------------
    def __call__(self, sender: int, payload: bytes) -> Outcome:
        try:
            name, m = self.defs.decode(payload)
        except UnknownMessage as exc:
            with self.lock:
                self.unhandled.append(f"<msg id {exc.args[0]}>")
            return Outcome()
        except Exception:
            return Outcome(drop=True)  # not a message: treat the connection as broken
        with self.lock:
            self.calls.append(name)
            try:
                return self._handle(sender, name, m)
            finally:
                if self.ctx.model.dirty:
                    self.on_change()

    def _handle(self, sender: int, name: str, m: dict[str, Any]) -> Outcome:
        if name == "sockclnt_create":
            self.client_names[sender] = str(m["name"])
            table = self.defs.message_table()
            fields = {"response": 0, "index": sender, "count": len(table), "message_table": table}
            return self._out(sender, m, [("sockclnt_create_reply", fields)])
        target = int(m["client_index"]) if "client_index" in m else sender
        if not self.live(target):
            return Outcome()
        if name == "sockclnt_delete":
            return self._delete(target, m)
        after_apply = self.drops.pop(name, None)
        if after_apply is False:
            return Outcome(drop=True)
        out = self._answer(name, m)
        if after_apply:
            return Outcome(drop=True)
        try:
            return self._out(target, m, out)
        except Exception:
            self.errors.append(f"{name} (encoding the answer): {traceback.format_exc()}")
            return self._out(target, m, self._retval_only(name, Retval.UNSPECIFIED))

    def _answer(self, name: str, m: dict[str, Any]) -> Out:
        fail = self.fails.get(name)
        if fail is not None:
            if fail.count is not None:
                fail.count -= 1
                if fail.count <= 0:
                    del self.fails[name]
            return self._retval_only(name, fail.retval)
        handler = HANDLERS.get(name)
        if handler is None:
            self.unhandled.append(name)
            return self._retval_only(name, Retval.UNSPECIFIED)
        try:
            return handler(self.ctx, m)
        except Exception:
            self.errors.append(f"{name}: {traceback.format_exc()}")
            return self._retval_only(name, Retval.UNSPECIFIED)

    def _retval_only(self, name: str, retval: int) -> Out:
        """The request's reply with only ``retval`` set, if it has a reply with a retval."""
        reply = self.defs.reply_of(name)
        if reply is None or not self.defs.has_field(reply, "retval"):
            return []
        return [(reply, {"retval": int(retval)})]

    def _delete(self, target: int, m: dict[str, Any]) -> Outcome:
        victim = (int(m["index"]) & ~HANDLE_BIT) | HANDLE_BIT
        if not self.live(victim):
            return self._out(target, m, [("sockclnt_delete_reply", {"response": -1})])
        outcome = self._out(target, m, [("sockclnt_delete_reply", {"response": 1})])
        outcome.close = True  # vl_api_registration_del_file (regp)
        if victim != target:
            outcome.close_also.append(victim)  # vl_socket_free_registration_index (index)
        return outcome

    def _out(self, target: int, m: dict[str, Any], out: Out) -> Outcome:
        context = int(m.get("context", 0))
        sends = []
        for msg_name, fields in out:
            if self.defs.has_field(msg_name, "context"):
                fields = {**fields, "context": context}
            sends.append((target, self.defs.encode(msg_name, fields)))
        return Outcome(sends=sends)

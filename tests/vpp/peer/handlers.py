"""The table of message handlers, filled by the ``h_*`` modules as they are imported.

A handler gets the decoded request (a dict of raw fields) and returns the messages to send back
as ``(message name, fields)``; the dispatcher fills in ``context`` and the message id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.vpp.peer.apidefs import ApiDefs
from tests.vpp.peer.linux import Host
from tests.vpp.peer.model import Interface, Model
from tests.vpp.peer.wire import NO_INDEX

Out = list[tuple[str, dict[str, Any]]]


@dataclass
class Ctx:
    model: Model
    host: Host
    defs: ApiDefs
    vhost_net: bool


Handler = Callable[[Ctx, dict[str, Any]], Out]
HANDLERS: dict[str, Handler] = {}


def handles(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


def reply(name: str, retval: int = 0, **fields: Any) -> Out:
    return [(name, {"retval": int(retval), **fields})]


def valid(ctx: Ctx, sw_if_index: int) -> Interface | None:
    """``vnet_sw_if_index_is_api_valid``: a live interface (none of ours is hidden)."""
    if sw_if_index == NO_INDEX:
        return None
    return ctx.model.get(sw_if_index)

"""Netlink steps and link look-ups: error mapping, "already gone" handling, :class:`Link`.

Every kernel step runs inside :func:`step`, which turns whatever the step raised into a
:class:`~nsm_forwarder.drivers.errors.ForwarderError` whose message names the step (and so the
interface and the namespace inode): ``EEXIST`` becomes :class:`AlreadyExists`, anything else
:class:`DriverError`.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from nsm_forwarder.drivers.base import build_group, parse_tag
from nsm_forwarder.drivers.errors import AlreadyExists, DriverError, ForwarderError
from nsm_forwarder.drivers.linux.pyroute import NetlinkError

log = logging.getLogger(__name__)

#: errnos meaning "the object is already gone" when deleting it.
GONE = frozenset({errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL, errno.ENXIO})


def error_code(exc: BaseException) -> int | None:
    """The errno carried by a NetlinkError or OSError, else None."""
    if isinstance(exc, NetlinkError):
        return int(exc.code) if exc.code else None
    if isinstance(exc, OSError):
        return exc.errno
    return None


def to_forwarder_error(exc: BaseException, what: str) -> ForwarderError:
    """Map an exception raised while doing ``what`` to a ForwarderError (unchanged if one)."""
    if isinstance(exc, ForwarderError):
        return exc
    code = error_code(exc)
    if code == errno.EEXIST:
        return AlreadyExists(f"{what}: {os.strerror(code)}")
    if code:
        return DriverError(f"{what}: {os.strerror(code)}")
    return DriverError(f"{what}: {type(exc).__name__}: {exc}")


@contextmanager
def step(what: str) -> Iterator[None]:
    """Run one kernel step; any failure is re-raised as a ForwarderError naming ``what``."""
    log.debug("%s", what)
    try:
        yield
    except ForwarderError:
        raise
    except Exception as exc:
        raise to_forwarder_error(exc, what) from exc


def ignore_gone(action: Callable[[], object]) -> Callable[[], None]:
    """Wrap an undo so that "already gone" (e.g. removed along with its interface) is success."""

    def run() -> None:
        try:
            action()
        except NetlinkError as exc:
            if exc.code not in GONE:
                raise

    return run


def delete_link(ipr: Any, index: int) -> bool:
    """Delete the interface; False if it was gone already (e.g. the peer of one just deleted)."""
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code in GONE:
            return False
        raise
    return True


@dataclass(frozen=True)
class Link:
    """What the driver needs to know about one interface."""

    index: int
    name: str
    alias: str | None
    group: int = 0

    def owned_as(self, want: str) -> bool:
        """True when this interface is ours under tag ``want``, or is a leftover of that id
        that never got its tag (a worker killed between creating it and setting the alias: it
        has no alias and is still in the id's :func:`build_group`). An untagged interface that
        another id is building right now is in that id's group, so it is never taken."""
        if self.alias == want:
            return True
        parsed = parse_tag(want)
        return not self.alias and parsed is not None and self.group == build_group(parsed[0])


def link_of(msg: Any) -> Link:
    """A :class:`Link` from a pyroute2 RTM_NEWLINK message."""
    return Link(
        index=int(msg["index"]),
        name=str(msg.get("ifname")),
        alias=msg.get("ifalias"),
        group=int(msg.get("group") or 0),
    )


def get_link(ipr: Any, *, ifname: str | None = None, index: int | None = None) -> Link | None:
    """The interface with this name (or index) in ``ipr``'s namespace, None if there is none.

    One RTM_GETLINK request, no dump.
    """
    try:
        if ifname is not None:
            msgs = ipr.link("get", ifname=ifname)
        else:
            msgs = ipr.link("get", index=index)
    except NetlinkError as exc:
        if exc.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return link_of(msgs[0]) if msgs else None

"""Remove tagged interfaces that no cross-connect owns (orphans found by ``observe``)."""

from __future__ import annotations

import logging
import os
from typing import Any

from nsm_forwarder.drivers.base import tag
from nsm_forwarder.drivers.errors import NotFound
from nsm_forwarder.drivers.kernel import netns
from nsm_forwarder.drivers.kernel.ops import delete_link, get_link, step

log = logging.getLogger(__name__)


def sweep_tagged(found: list[dict[str, Any]]) -> int:
    """Delete each ``{"id", "side", "inode", "ifindex"}`` interface that still carries that tag.

    Returns how many were deleted. A namespace or interface that is gone already is skipped;
    an interface whose tag changed meanwhile is left alone.
    """
    deleted = 0
    for entry in found:
        try:
            fd = netns.open_netns(int(entry["inode"]))
        except NotFound:
            continue
        try:
            with netns.iproute_in(fd) as ipr:
                with step(f"look up ifindex {entry['ifindex']} in netns {entry['inode']}"):
                    link = get_link(ipr, index=int(entry["ifindex"]))
                if link is None or link.alias != tag(entry["id"], entry["side"]):
                    continue
                with step(f"delete orphan {link.name} in netns {entry['inode']}"):
                    if not delete_link(ipr, link.index):
                        continue
                deleted += 1
                log.debug(
                    "deleted orphan %s (%s) in netns %d", link.name, link.alias, entry["inode"]
                )
        finally:
            os.close(fd)
    return deleted

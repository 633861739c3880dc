"""Interface counters of cross-connect ends, read from the kernel (IFLA_STATS64)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from nsm_forwarder.drivers.errors import NotFound
from nsm_forwarder.drivers.linux.links import step
from nsm_forwarder.drivers.linux.sockets import NetnsSockets

#: NSM metric names (spec §4.9) and the kernel counters they come from.
COUNTERS = {
    "rx_bytes": "rx_bytes",
    "tx_bytes": "tx_bytes",
    "rx_packets": "rx_packets",
    "tx_packets": "tx_packets",
    "rx_error_packets": "rx_errors",
    "tx_error_packets": "tx_errors",
}


def read_stats(sockets: NetnsSockets, entries: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counters of each ``{"key", "inode", "name"}`` interface, keyed by ``key``.

    Interfaces or namespaces that no longer exist are left out (their pod is gone).
    """
    by_inode: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_inode[int(entry["inode"])].append(entry)
    result: dict[str, dict[str, int]] = {}
    for inode, group in by_inode.items():
        try:
            sockets.get(inode)
            rt = sockets.raw(inode)
        except NotFound:
            continue
        for entry in group:
            with step(f"read counters of {entry['name']} in netns {inode}"):
                stats = rt.link_stats(entry["name"])
            if stats is not None:
                result[entry["key"]] = {k: int(stats[v]) for k, v in COUNTERS.items()}
    return result

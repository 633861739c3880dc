"""Per-interface counters from VPP's stats segment (``vpp_papi.vpp_stats.VPPStats``).

The segment is shared memory VPP hands out over its stats socket; counters are indexed by
``sw_if_index`` and summed over VPP's threads.
"""

from __future__ import annotations

import logging
from typing import Any

from nsm_forwarder.drivers.vpp.api import VppUnavailable

log = logging.getLogger(__name__)

#: NSM metric name -> (stats segment path, combined-counter column or None for simple)
COUNTERS: dict[str, tuple[str, str | None]] = {
    "rx_bytes": ("/if/rx", "bytes"),
    "tx_bytes": ("/if/tx", "bytes"),
    "rx_packets": ("/if/rx", "packets"),
    "tx_packets": ("/if/tx", "packets"),
    "rx_error_packets": ("/if/rx-error", None),
    "tx_error_packets": ("/if/tx-error", None),
}


class VppCounters:
    """A lazily connected reader of VPP's stats segment."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self._stats: Any = None

    def read(self, indexes: dict[str, int]) -> dict[str, dict[str, int]]:
        """Counters of each ``{key: sw_if_index}``; an index beyond the segment is left out."""
        stats = self._connect()
        try:
            tables = {path: stats[path] for path, _ in COUNTERS.values()}
        except (OSError, KeyError, ValueError) as exc:
            self.close()
            raise VppUnavailable(f"reading VPP's stats segment at {self.socket}: {exc}") from None
        result: dict[str, dict[str, int]] = {}
        for key, index in indexes.items():
            values: dict[str, int] = {}
            for metric, (path, column) in COUNTERS.items():
                table = tables[path]
                if not table or index >= len(table[0]):
                    break
                if column is None:
                    values[metric] = int(sum(row[index] for row in table))
                else:
                    pos = 0 if column == "packets" else 1
                    values[metric] = int(sum(row[index][pos] for row in table))
            else:
                result[key] = values
        return result

    def _connect(self) -> Any:
        if self._stats is None:
            from vpp_papi.vpp_stats import VPPStats

            stats = VPPStats(self.socket, timeout=2)
            try:
                stats.connect()
            except Exception as exc:
                raise VppUnavailable(
                    f"cannot read VPP's stats segment at {self.socket}: {exc}"
                ) from None
            self._stats = stats
        return self._stats

    def close(self) -> None:
        stats, self._stats = self._stats, None
        if stats is not None:
            try:
                stats.disconnect()
            except Exception as exc:  # dropping it anyway
                log.debug("stats disconnect: %s", exc)

"""Go-compatible value parsing: booleans and durations as Go's strconv and time packages read them.

Holds :func:`parse_go_bool` (``strconv.ParseBool``), :func:`parse_go_duration`
(``time.ParseDuration``) and :func:`format_go_duration` (``Duration.String``), plus the pieces
the settings field types reuse: :func:`go_duration_ns` (the bare nanosecond count),
:func:`timedelta_from_ns` and the ``GO_*_HELP`` texts that name the accepted forms in messages.

Pure functions, no I/O and no dependency on the rest of :mod:`nsm_forwarder.config`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

__all__ = [
    "GO_BOOL_HELP",
    "GO_DURATION_HELP",
    "format_go_duration",
    "go_duration_ns",
    "parse_go_bool",
    "parse_go_duration",
    "timedelta_from_ns",
]

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
#: The accepted Go boolean spellings, for messages.
GO_BOOL_HELP = "1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"

# Nanoseconds per unit, as in Go's time.ParseDuration (µ is U+00B5, μ is U+03BC).
_GO_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_GO_DURATION_SEGMENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
#: The accepted Go duration form, for messages.
GO_DURATION_HELP = "a Go duration (number + unit ns/us/ms/s/m/h, e.g. '2s', '1500ms', '1m30s')"
_MAX_NS = (1 << 63) - 1


def parse_go_bool(text: str) -> bool:
    """parse_go_bool - Go's strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False.

    Raises ValueError for anything else (including the empty string and surrounding spaces).
    """
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f"invalid boolean {text!r}: expected one of {GO_BOOL_HELP}")


def go_duration_ns(text: str) -> int:
    """go_duration_ns - nanoseconds of a Go duration string, as Go's time.ParseDuration reads it.

    Raises ValueError whose message is the bare reason ("missing unit", "unknown unit 'x'", ...);
    callers add the text and the expected form.
    """
    s = text
    negative = False
    if s[:1] in ("+", "-"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise ValueError("empty duration" if text == "" else "missing number")
    total = 0
    pos = 0
    while pos < len(s):
        m = _GO_DURATION_SEGMENT.match(s, pos)
        assert m is not None  # the pattern matches the empty string
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise ValueError(f"expected a number at {s[pos:]!r}")
        if not unit:
            raise ValueError("missing unit")
        if unit not in _GO_UNITS:
            raise ValueError(f"unknown unit {unit!r}")
        scale = _GO_UNITS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        if total > _MAX_NS + (1 if negative else 0):
            raise ValueError("overflow (more than about 292 years)")
        pos = m.end()
    return -total if negative else total


def timedelta_from_ns(ns: int) -> timedelta:
    """timedelta_from_ns - ``ns`` nanoseconds as a timedelta, rounded to the nearest microsecond."""
    return timedelta(microseconds=round(Fraction(ns, 1000)))


def parse_go_duration(text: str) -> timedelta:
    """parse_go_duration - Go's time.ParseDuration ("2s", "1500ms", "1m30s", "300us", "-1.5h").

    The result has microsecond resolution (timedelta), so nanoseconds are rounded to the nearest
    microsecond. Raises ValueError naming the text and the reason.
    """
    try:
        ns = go_duration_ns(text)
    except ValueError as e:
        raise ValueError(f"invalid duration {text!r}: {e}; expected {GO_DURATION_HELP}") from None
    return timedelta_from_ns(ns)


def format_go_duration(value: timedelta) -> str:
    """format_go_duration - Go's Duration.String for a timedelta ("2s", "1m30s", "1.5ms", "2h0m0s").

    Uses the ASCII unit "us" for microseconds; :func:`parse_go_duration` reads the result back.
    """
    us = value // timedelta(microseconds=1)
    sign = "-" if us < 0 else ""
    us = abs(us)
    if us == 0:
        return "0s"
    if us < 1_000:
        return f"{sign}{us}us"
    if us < 1_000_000:
        return f"{sign}{_decimal(us, 1_000)}ms"
    minutes, rest = divmod(us, 60_000_000)
    hours, minutes = divmod(minutes, 60)
    seconds = f"{_decimal(rest, 1_000_000)}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"


def _decimal(value: int, unit: int) -> str:
    """``value / unit`` as a decimal without trailing zeros (1500, 1000 -> "1.5")."""
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"

"""Tests of nsm_forwarder.config.gotypes: Go's ParseBool, ParseDuration and Duration.String."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nsm_forwarder.config.gotypes import format_go_duration, parse_go_bool, parse_go_duration


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_go_bool_true(text: str) -> None:
    assert parse_go_bool(text) is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_go_bool_false(text: str) -> None:
    assert parse_go_bool(text) is False


@pytest.mark.parametrize("text", ["", "yes", "no", "tRUE", " true", "2", "on"])
def test_parse_go_bool_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid boolean"):
        parse_go_bool(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2s", timedelta(seconds=2)),
        ("1500ms", timedelta(milliseconds=1500)),
        ("1m30s", timedelta(seconds=90)),
        ("300us", timedelta(microseconds=300)),
        ("300\u00b5s", timedelta(microseconds=300)),
        ("300\u03bcs", timedelta(microseconds=300)),
        ("1.5h", timedelta(minutes=90)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("2h45m0.5s", timedelta(hours=2, minutes=45, milliseconds=500)),
        ("1500ns", timedelta(microseconds=2)),  # rounded to microseconds
        ("0", timedelta(0)),
        ("-1.5s", timedelta(seconds=-1.5)),
        ("+3s", timedelta(seconds=3)),
    ],
)
def test_parse_go_duration_valid(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("5", "missing unit"),
        ("2x", "unknown unit 'x'"),
        ("2 s", "unknown unit ' s'"),
        ("s", "expected a number"),
        (".s", "expected a number"),
        ("-", "missing number"),
        ("1d", "unknown unit 'd'"),
        ("3000000h", "overflow"),
    ],
)
def test_parse_go_duration_invalid(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_go_duration(text)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        timedelta(seconds=2),
        timedelta(seconds=90),
        timedelta(hours=2),
        timedelta(microseconds=300),
        timedelta(milliseconds=1500),
        timedelta(microseconds=1001),
        timedelta(seconds=-3),
        timedelta(0),
    ],
)
def test_format_go_duration_round_trips(value: timedelta) -> None:
    assert parse_go_duration(format_go_duration(value)) == value


def test_format_go_duration_looks_like_go() -> None:
    assert format_go_duration(timedelta(seconds=90)) == "1m30s"
    assert format_go_duration(timedelta(hours=2)) == "2h0m0s"
    assert format_go_duration(timedelta(milliseconds=1500)) == "1.5s"
    assert format_go_duration(timedelta(microseconds=1500)) == "1.5ms"

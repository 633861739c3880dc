"""Every actor message survives msgpack, so any actor could live in another process."""

from __future__ import annotations

import dataclasses

import pytest

from nsm_forwarder.actors import messages as m

SAMPLES: list[m.Message] = [
    m.ApplyXconn(xcon=b"\x0a\x01x"),
    m.XconnApplied(xcon=b"\x0a\x01x"),
    m.CloseXconn(xcon=b""),
    m.XconnClosed(id="x", known=True),
    m.MarkDown(sides=["source"]),
    m.Rebuild(why="a data-plane restart"),
    m.FinishClose(attempt=2),
    m.XconnUpdated(xcon=b"abc"),
    m.XconnDeleted(xcon=b"abc"),
    m.MetricsCollected(metrics={"SRC-x": {"rx_bytes": "10"}}),
    m.Subscribe(sub_id="s1"),
    m.Reload(xcons=[b"x", b"y"]),
    m.ListXconns(),
    m.WorkerCall(corr=7, method="apply", args=[{"id": "x", "src": {"inode": 1}}]),
    m.WorkerReply(
        corr=7, ok=False, error={"code": "NOT_FOUND", "message": "m", "retriable": False}
    ),
]


def test_messages_every_type_has_a_sample() -> None:
    assert {type(s) for s in SAMPLES} == set(m.MESSAGE_TYPES.values())


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: s.TAG)
def test_messages_roundtrip_msgpack(msg: m.Message) -> None:
    assert m.unpack(m.pack(msg)) == msg
    assert dataclasses.is_dataclass(msg)


def test_messages_decoder_handles_split_stream() -> None:
    data = b"".join(m.pack(s) for s in SAMPLES)
    decoder = m.Decoder()
    got: list[m.Message] = []
    for i in range(0, len(data), 7):
        got += decoder.feed(data[i : i + 7])
    assert got == SAMPLES


def test_messages_reject_unknown_tag() -> None:
    with pytest.raises(ValueError, match="unknown message tag"):
        m.from_wire(["nope", {}])

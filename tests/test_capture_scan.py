"""The fields capture reads from a frame without parsing it are those a full parse gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.capture.scan import NOT_PARSED, frame_fields, simple_frame
from recorder.events import EventKind
from recorder.sse import SSESplitter, parse_frame
from recorder.tape import read_tape

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "realdata"


def full(raw: bytes) -> tuple[str | None, int | None]:
    event_type, number, _ = frame_fields(parse_frame(raw, stream_start=False))
    return event_type, number


def test_every_recorded_frame_reads_the_same_either_way() -> None:
    checked = 0
    for tape in FIXTURES.rglob("*.jsonl"):
        for ev in read_tape(tape):
            if ev.kind is not EventKind.SSE:
                continue
            fast = simple_frame(ev.payload)
            if fast is not None:
                assert fast == full(ev.payload)
                checked += 1
            # The shortcut never skips what capture must parse in full.
            _, _, parsed = frame_fields(parse_frame(ev.payload, stream_start=False))
            if isinstance(parsed, dict):
                assert fast is None
    assert checked > 1000


@pytest.mark.parametrize(
    "raw",
    [
        b'event: a\ndata: {"type":"a","sequence_number":7,"x":1}\n\n',
        b'event: a\ndata: {"type":"a","sequence_number":07,"x":1}\n\n',  # not JSON
        b'event: a\ndata: {"type":"a","sequence_number":-7,"x":1}\n\n',
        b'event: a\ndata: {"type":"b","sequence_number":7,"x":1}\n\n',  # name != type
        b'event: a\ndata: {"type":"a","sequence_number":7,"x":1}\nevent: c\n\n',  # last wins
        b'event: a\ndata: {"type":"a","sequence_number":7,"x":1}\nid: 9\n\n',
        b'event: a\\"\ndata: {"type":"a\\"","sequence_number":7,"x":1}\n\n',  # escaped
        b'event: response.completed\ndata: {"type":"response.completed",'
        b'"sequence_number":7,"response":{"id":"r"}}\n\n',
        b'event: response.created\ndata: {"type":"response.created",'
        b'"sequence_number":0,"response":{"id":"r"}}\n\n',
        b'event: error\ndata: {"type":"error","sequence_number":2,"message":"m"}\n\n',
        b'event: a\ndata: {"type":"a","sequence_number":7}\n\n',
        b'data: {"type":"a","sequence_number":7,"x":1}\n\n',
        b'event: \xff\xfe\ndata: {"type":"\xff\xfe","sequence_number":7,"x":1}\n\n',
    ],
)
def test_edge_cases_read_the_same_or_go_the_long_way(raw: bytes) -> None:
    fast = simple_frame(raw)
    assert fast is None or fast == full(raw)


@given(
    name=st.text(min_size=1, max_size=12).filter(lambda t: "\n" not in t and "\r" not in t),
    number=st.integers(min_value=0, max_value=10**12),
    rest=st.text(max_size=20),
)
def test_any_usual_frame_reads_the_same_either_way(name: str, number: int, rest: str) -> None:
    import json

    for separators in ((",", ":"), (", ", ": ")):
        data = json.dumps(
            {"type": name, "sequence_number": number, "x": rest}, separators=separators
        )
        raw = f"event: {name}\ndata: {data}\n\n".encode()
        fast = simple_frame(raw)
        assert fast is None or fast == full(raw)


@pytest.mark.parametrize(
    "data",
    [
        '{"type":"a","sequence_number":7,"x":1}',
        '{"type": "a", "sequence_number": 7, "x": 1}',  # json.dumps defaults
        '{ "type" : "a" ,\t"sequence_number" :\t7 , "x": 1}',
    ],
)
def test_compact_and_spaced_frames_are_read_without_a_full_parse(data: str) -> None:
    raw = f"event: a\ndata: {data}\n\n".encode()
    assert simple_frame(raw) == ("a", 7)
    assert frame_fields(parse_frame(raw, stream_start=False)) == ("a", 7, NOT_PARSED)


@pytest.mark.parametrize(
    "data",
    [
        '{"type": "a", "sequence_number": 7.5, "x": 1}',
        '{"type": "a", "sequence_number": -7, "x": 1}',
        '{"type": "response.created", "sequence_number": 0, "response": {"id": "r"}}',
        '{"type": "a", "sequence_number": 7, "response": {"id": "r"}}',
        '{"type": "a", "sequence_number": 7}',
    ],
)
def test_spaced_frames_capture_needs_whole_are_parsed_in_full(data: str) -> None:
    raw = f"event: a\ndata: {data}\n\n".encode()
    assert simple_frame(raw) is None
    assert frame_fields(parse_frame(raw, stream_start=False))[2] is not NOT_PARSED


def test_the_splitter_vouches_for_whole_frames_only_when_feed_would_agree() -> None:
    frame = b'event: a\ndata: {"type":"a","sequence_number":1,"x":1}\n\n'
    splitter = SSESplitter()
    assert not splitter.is_whole(frame)  # the stream's start (a BOM could be there)
    assert [f.raw for f in splitter.feed(frame)] == [frame]
    assert splitter.is_whole(frame)
    assert not splitter.is_whole(frame + frame)  # two frames
    assert not splitter.is_whole(frame[:-1])  # not ended
    assert not splitter.is_whole(frame.replace(b"\n", b"\r\n"))
    splitter.feed(frame[:10])
    assert not splitter.is_whole(frame)  # something is pending

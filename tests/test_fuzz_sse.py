"""Fuzzing the SSE splitter with hostile fields, in any chunking.

``tests/test_sse.py`` proves the framing on arbitrary bytes; here the lines
are the ones that break field parsing: JSON nested far past the recursion
limit, numbers past Python's 4,300-digit limit (in ``retry`` and in the
JSON), invalid UTF-8, NULs in ``id``, a BOM mid-stream. The splitter never
raises, gives the bytes back exactly, and every field accessor answers.
"""

from __future__ import annotations

from fuzzing import FUZZ, deep
from hypothesis import given
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from recorder.sse import SSESplitter, split_sse

HOSTILE_LINES = [
    b"data: " + deep(100_000),
    b'data: {"type":"response.created","response":' + deep(5000, b'{"a":', b"}") + b"}",
    b"data: " + b"1" * 5000,
    b'data: {"type":"x","sequence_number":' + b"9" * 5000 + b"}",
    b"retry: " + b"9" * 5000,
    b"retry: 12",
    b"id: a\x00b",
    b"id: \xff\xfe",
    b"event: \xc3(",
    b"data: \xed\xa0\x80",
    b"\xef\xbb\xbfdata: bom",
    b": comment",
    b"data",
    b"data: {",
    b'data: {"type": 5}',
    b'data: {"type":"response.completed","response":{"id":' + deep(3000) + b"}}",
]
EOLS = [b"\n", b"\r\n", b"\r"]

streams = st.lists(
    st.tuples(
        st.lists(st.sampled_from(HOSTILE_LINES), min_size=1, max_size=4),
        st.sampled_from(EOLS),
        st.booleans(),
    ),
    min_size=1,
    max_size=5,
).map(
    lambda frames: b"".join(
        eol.join(lines) + eol + (eol if terminated else b"") for lines, eol, terminated in frames
    )
)


@FUZZ
@given(body=streams, cuts=st.lists(st.integers(1, 400_000), max_size=6))
def test_hostile_fields_in_any_chunking(body: bytes, cuts: list[int]) -> None:
    points = sorted({c for c in cuts if c < len(body)})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    splitter = SSESplitter()
    frames = [f for chunk in chunks for f in splitter.feed(chunk)] + splitter.flush()
    assert b"".join(f.raw for f in frames) == body
    assert [f.raw for f in frames] == [f.raw for f in split_sse(body)]  # chunking-blind
    for frame in frames:
        frame.json()
        _ = (frame.type, frame.sequence_number, frame.response_id, frame.terminated, frame.cut)
        _ = frame.fields()


def test_a_retry_past_the_digit_limit_is_ignored_as_the_sdk_ignores_it() -> None:
    # int() refuses more than 4,300 digits: this frame used to raise ValueError.
    body = b"retry: 12\n\nretry: " + b"9" * 5000 + b"\ndata: x\n\n"
    frames = split_sse(body)
    sdk = list(SSEDecoder().iter_bytes(iter([body])))
    assert frames[0].retry == sdk[0].retry == 12
    assert frames[1].retry is None and sdk[-1].retry is None and frames[1].data == "x"

"""Fuzzing the replay matcher: whatever a tape holds and whatever a client sends.

For any recorded exchanges and any live request (JSON of any shape, nested
hundreds deep, multipart with broken boundaries, bytes that are not UTF-8,
URLs that do not parse), :meth:`Matcher.match` returns a recorded exchange or
raises :class:`NoMatch` with a message; a request identical to a recorded one
gets that exchange.
"""

from __future__ import annotations

import json
from typing import Any

from fuzzing import FUZZ, deep
from hypothesis import given
from hypothesis import strategies as st

from replay.matching import Matcher, MatchOptions, NoMatch
from replay.source import Chunk, Exchange

BASE = "https://api.openai.com"

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=20,
)


def _nested(depth: int, leaf: str) -> bytes:
    return b'{"input":' + b"[" * depth + leaf.encode() + b"]" * depth + b"}"


bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"\xff\xfe", b"{", b"--", b"--x\r\n", deep(5000)]),
    st.builds(_nested, st.integers(1, 990), st.sampled_from(["", "1", '"x"'])),
    st.builds(
        lambda name, content, end: (
            b"--B\r\nContent-Disposition: form-data; name=" + name + b"\r\n\r\n" + content + end
        ),
        st.binary(max_size=10),
        st.binary(max_size=20),
        st.sampled_from([b"\r\n--B--\r\n", b"", b"\r\n--B"]),
    ),
)
urls = st.one_of(
    st.builds(
        lambda path, query: f"{BASE}/v1/{path}" + (f"?{query}" if query else ""),
        st.text(max_size=12),
        st.text(max_size=12),
    ),
    st.sampled_from(["http://[::1", "", "::::", "https://x:99999999/", "%zz", "/v1/responses"]),
)
content_types = st.sampled_from(
    ["application/json", "multipart/form-data; boundary=B", "multipart/form-data", "", "text/x"]
)
methods = st.sampled_from(["POST", "GET", "DELETE", "post", ""])
requests = st.tuples(methods, urls, content_types, bodies)


def _exchange(index: int, request: tuple[str, str, str, bytes], redacted: bool) -> Exchange:
    method, url, content_type, body = request
    return Exchange(
        id=f"x{index}",
        session_id="s",
        index=index,
        method=method,
        url=url,
        request_headers=(("content-type", content_type),),
        request_body=body,
        request_known=True,
        status=200,
        response_headers=(("content-type", "application/json"),),
        head_offset_ns=None,
        streamed=False,
        chunks=(Chunk(b"{}", None),),
        outcome="completed",
        reason=None,
        redacted_paths=("input.*.x", "metadata") if redacted else (),
    )


@FUZZ
@given(
    recorded=st.lists(requests, min_size=0, max_size=4),
    live=requests,
    redacted=st.booleans(),
    headers=st.booleans(),
)
def test_any_request_is_matched_or_told_why_not(
    recorded: list[tuple[str, str, str, bytes]],
    live: tuple[str, str, str, bytes],
    redacted: bool,
    headers: bool,
) -> None:
    matcher = Matcher(
        [_exchange(i, r, redacted) for i, r in enumerate(recorded)],
        MatchOptions.build(["model", "input.0"], match_headers=headers),
    )
    method, url, content_type, body = live
    try:
        got = matcher.match(method, url, [("content-type", content_type)], body)
    except NoMatch as exc:
        assert str(exc)
    else:
        assert got in matcher.exchanges


@FUZZ
@given(recorded=st.lists(requests, min_size=1, max_size=4), pick=st.integers(0, 3))
def test_a_request_identical_to_a_recorded_one_is_served(
    recorded: list[tuple[str, str, str, bytes]], pick: int
) -> None:
    matcher = Matcher([_exchange(i, r, False) for i, r in enumerate(recorded)])
    method, url, content_type, body = recorded[pick % len(recorded)]
    got = matcher.match(method, url, [("content-type", content_type)], body)
    # It, or an earlier recorded exchange that compares equal to it, is served.
    assert got.index <= pick % len(recorded)


def test_json_nested_hundreds_deep_is_compared_not_a_crash() -> None:
    # The parser takes about 990 levels; comparing used to recurse two frames
    # a level and failed from about 500.
    recorded = _nested(900, "")
    matcher = Matcher([_exchange(0, ("POST", f"{BASE}/v1/responses", "", recorded), False)])
    try:
        matcher.match("POST", f"{BASE}/v1/responses", [], _nested(900, "1"))
    except NoMatch as exc:
        assert "body" in str(exc)
    else:
        raise AssertionError("a different body matched")
    assert matcher.match("POST", f"{BASE}/v1/responses", [], recorded).index == 0


def test_a_recorded_url_that_does_not_parse_is_compared_as_it_is() -> None:
    matcher = Matcher([_exchange(0, ("POST", "http://[::1", "", b"{}"), False)])
    assert matcher.match("POST", "http://[::1", [], b"{}").index == 0

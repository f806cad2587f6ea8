"""Matching requests to recorded exchanges, and the diff when none matches."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from openai import OpenAI

from replay import MatchOptions, NoMatch, ReplayTransport, UnplayedExchanges
from replay.matching import Matcher
from replay.source import Chunk, Exchange, load_tape

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT / "fixtures" / "realdata"
URL = "https://api.openai.com/v1/responses"


def _exchange(
    index: int,
    body: dict[str, object] | bytes,
    *,
    method: str = "POST",
    url: str = URL,
    answer: bytes = b"{}",
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),),
    known: bool = True,
) -> Exchange:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Exchange(
        id=f"x{index}",
        session_id="s",
        index=index,
        method=method,
        url=url,
        request_headers=headers,
        request_body=raw,
        request_known=known,
        status=200,
        response_headers=(("content-type", "application/json"),),
        head_offset_ns=None,
        streamed=False,
        chunks=(Chunk(answer, None),),
        outcome="completed",
        reason=None,
    )


def _match(m: Matcher, body: object, *, method: str = "POST", url: str = URL) -> Exchange:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return m.match(method, url, [("content-type", "application/json")], raw)


def test_json_key_order_and_spacing_do_not_matter() -> None:
    m = Matcher([_exchange(0, b'{"model": "gpt-5", "input": [{"role": "user", "content": "x"}]}')])
    got = m.match("POST", URL, [], b'{"input":[{"content":"x","role":"user"}],\n "model":"gpt-5"}')
    assert got.index == 0


def test_host_is_not_compared_but_path_and_query_are() -> None:
    m = Matcher(
        [
            _exchange(
                0, b"", method="GET", url="https://api.openai.com/v1/files?limit=2&order=asc"
            ),
        ]
    )
    assert m.match("GET", "http://127.0.0.1:9/v1/files?order=asc&limit=2", [], b"").index == 0
    m.reset()
    with pytest.raises(NoMatch) as info:
        m.match("GET", "http://127.0.0.1:9/v1/files?order=desc&limit=2", [], b"")
    assert 'query order: recorded "asc", got "desc"' in str(info.value)


def test_repeated_identical_requests_get_recorded_exchanges_in_order() -> None:
    body = {"model": "m", "input": "same"}
    m = Matcher(
        [
            _exchange(0, body, answer=b'{"n": 1}'),
            _exchange(1, {"model": "m", "input": "other"}),
            _exchange(2, body, answer=b'{"n": 2}'),
        ]
    )
    assert _match(m, body).body == b'{"n": 1}'
    assert _match(m, body).body == b'{"n": 2}'
    assert [x.index for x in m.unplayed()] == [1]
    with pytest.raises(NoMatch, match=r"matches only #3 POST /v1/responses .* already played"):
        _match(m, body)


def test_allow_repeats_serves_the_last_match_again() -> None:
    body = {"model": "m", "input": "same"}
    m = Matcher([_exchange(0, body)], MatchOptions(allow_repeats=True))
    assert _match(m, body).index == 0
    assert _match(m, body).index == 0


def test_no_match_names_the_closest_request_and_each_difference() -> None:
    m = Matcher(
        [
            _exchange(0, {"model": "gpt-5", "input": "a", "tools": [{"type": "code_interpreter"}]}),
            _exchange(1, b"", method="GET", url="https://api.openai.com/v1/models"),
        ],
        source="demo.jsonl",
    )
    with pytest.raises(NoMatch) as info:
        _match(m, {"model": "gpt-5-mini", "input": "a", "tools": [], "store": False})
    text = str(info.value)
    assert text.splitlines()[0] == "no recorded exchange in demo.jsonl matches POST /v1/responses"
    assert "closest is #1 POST /v1/responses, which differs in:" in text
    assert '  body.model: recorded "gpt-5", got "gpt-5-mini"' in text
    assert "  body.tools length: recorded 1, got 0" in text
    assert "  body.store: recorded (absent), got false" in text
    assert "GET" not in text


def test_no_match_on_method_and_path() -> None:
    m = Matcher([_exchange(0, b"", method="GET", url="https://api.openai.com/v1/models")])
    with pytest.raises(NoMatch) as info:
        m.match("DELETE", "https://api.openai.com/v1/models/x", [], b"")
    assert "method: recorded GET, got DELETE" in str(info.value)
    assert "path: recorded /v1/models, got /v1/models/x" in str(info.value)


def test_json_types_are_compared_strictly() -> None:
    m = Matcher([_exchange(0, {"n": 1})])
    with pytest.raises(NoMatch, match=r"body\.n: recorded 1, got true"):
        _match(m, {"n": True})


def test_ignored_body_fields_top_level_and_dotted() -> None:
    options = MatchOptions.build(["user", "metadata.run_id"])
    recorded = {"model": "m", "user": "a", "metadata": {"run_id": "1", "k": "v"}}
    m = Matcher([_exchange(0, recorded)], options)
    assert _match(m, {"model": "m", "user": "b", "metadata": {"run_id": "2", "k": "v"}}).index == 0
    m.reset()
    with pytest.raises(NoMatch, match=r'body.metadata.k: recorded "v", got "w"'):
        _match(m, {"model": "m", "metadata": {"run_id": "2", "k": "w"}})


def test_headers_are_ignored_unless_asked_for() -> None:
    headers = (("content-type", "application/json"), ("openai-beta", "x"), ("user-agent", "a"))
    body = {"model": "m"}
    m = Matcher([_exchange(0, body, headers=headers)])
    assert m.match("POST", URL, [("openai-beta", "y")], json.dumps(body).encode()).index == 0

    strict = Matcher([_exchange(0, body, headers=headers)], MatchOptions.build(match_headers=True))
    with pytest.raises(NoMatch, match=r'header openai-beta: recorded "x", got "y"'):
        strict.match(
            "POST",
            URL,
            [("content-type", "application/json"), ("openai-beta", "y"), ("user-agent", "b")],
            json.dumps(body).encode(),
        )
    # user-agent is in the default ignored set; a configured set replaces it.
    got = strict.match(
        "POST",
        URL,
        [("content-type", "application/json"), ("openai-beta", "x"), ("user-agent", "b")],
        json.dumps(body).encode(),
    )
    assert got.index == 0
    loose = Matcher(
        [_exchange(0, body, headers=headers)],
        MatchOptions.build(match_headers=True, ignore_headers=["openai-beta", "user-agent"]),
    )
    assert loose.match("POST", URL, [("content-type", "application/json")], b'{"model":"m"}')


def test_an_unknown_recorded_request_matches_any_body() -> None:
    m = Matcher([_exchange(0, b"", known=False)])
    assert _match(m, {"model": "anything", "input": "at all"}).index == 0
    with pytest.raises(NoMatch):
        m.match("POST", "https://api.openai.com/v1/files", [], b"{}")


def test_multipart_uploads_match_whatever_the_boundary_and_part_order() -> None:
    tape = (
        REALDATA / "openai-dotnet/ResponsesToolTests/CodeInterpreterToolWithUploadedFileIds.jsonl"
    )
    recording = load_tape(tape)
    upload = recording.exchanges[0]
    assert upload.path == "/v1/files"
    request = httpx2.Request(
        "POST",
        "http://localhost/v1/files",
        data={"purpose": "assistants"},
        files={"file": ("test_data.csv", upload_content(upload))},
    )
    m = Matcher(recording.exchanges)
    body = request.read()
    assert b"--" + upload.request_body[2:10] not in body  # a different boundary
    got = m.match("POST", str(request.url), request.headers.multi_items(), body)
    assert got.index == 0
    # A different file content is a named difference.
    other = httpx2.Request(
        "POST",
        "http://localhost/v1/files",
        data={"purpose": "assistants"},
        files={"file": ("test_data.csv", b"other")},
    )
    with pytest.raises(NoMatch, match=r'form.file.content: recorded "'):
        m.match("POST", str(other.url), other.headers.multi_items(), other.read())


def upload_content(exchange: Exchange) -> bytes:
    from replay.matching import MatchOptions, RequestView

    view = RequestView.of(
        exchange.method,
        exchange.url,
        exchange.request_headers,
        exchange.request_body,
        MatchOptions(),
    )
    part = next(p for p in view.body if p["filename"] == "test_data.csv")
    content: str = part["content"]
    return content.encode()


def test_no_match_through_the_sdk_is_raised_as_is_without_retries() -> None:
    tape = REALDATA / "openai-dotnet/ResponsesTests/MaxTokens.jsonl"
    transport = ReplayTransport(tape)
    http = httpx2.Client(transport=transport)
    with (
        OpenAI(api_key="test", base_url="https://x/v1", http_client=http) as client,
        pytest.raises(NoMatch) as info,
    ):
        client.responses.create(
            model="gpt-4o-mini", input="Write three haikus", max_output_tokens=20
        )
    assert "body.input: recorded [" in str(info.value)
    assert "max_output_tokens" not in str(info.value)
    assert len(transport.served) == 0
    with pytest.raises(
        UnplayedExchanges, match=r"1 of 1 recorded exchanges .* #1 POST /v1/responses"
    ):
        transport.check_all_played()

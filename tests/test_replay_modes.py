"""Record modes against a local fake upstream (an httpx2.MockTransport), never the network.

``none`` is proven not to touch the network twice over: the "real" transport
handed to the tape counts its calls (zero), and a process audit hook sees no
``socket.connect`` from the test's thread.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from openai import OpenAI

from recorder.client import record
from recorder.export import export_sessions
from recorder.redact import REDACTED
from recorder.store import EventStore
from replay import NoMatch, ReplayTransport
from replay.matching import MatchOptions
from replay.modes import InvalidRecordMode, RecordMode, Tape, TapeMissing
from replay.source import load_tape

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT / "fixtures" / "realdata"
STREAM_TAPE = REALDATA / "pydantic-ai/test_openai_responses_stream.jsonl"

_CONNECTS: list[tuple[int, object]] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "socket.connect":
        _CONNECTS.append((threading.get_ident(), args[1]))


sys.addaudithook(_audit)


def _my_connects() -> list[object]:
    me = threading.get_ident()
    return [addr for tid, addr in _CONNECTS if tid == me]


SSE = (
    b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
    b'"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress",'
    b'"model":"gpt-test","output":[],"parallel_tool_calls":true,"tool_choice":"auto","tools":[]}}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","sequence_number":1,'
    b'"response":{"id":"resp_1","object":"response","created_at":1,"status":"completed",'
    b'"model":"gpt-test","output":[],"parallel_tool_calls":true,"tool_choice":"auto","tools":[]}}\n\n'
)


class _Wire(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body that arrives in pieces, as from a socket (not pre-read like ``content=``)."""

    def __init__(self, data: bytes) -> None:
        self._pieces = [data[i : i + 97] for i in range(0, len(data), 97)]

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


class Upstream:
    """A fake OpenAI: answers /v1/responses, streamed or not, and counts calls."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []
        self.transport = httpx2.MockTransport(self.handle)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.calls.append(body)
        if body.get("stream"):
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, stream=_Wire(SSE)
            )
        answer = {
            "id": f"resp_{len(self.calls)}",
            "object": "response",
            "created_at": 1,
            "status": "completed",
            "model": "gpt-test",
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "echo": body.get("input"),
        }
        data = json.dumps(answer).encode()
        return httpx2.Response(
            200,
            headers={"content-type": "application/json", "content-length": str(len(data))},
            stream=_Wire(data),
        )


def test_record_mode_is_a_str_enum_that_lists_valid_values() -> None:
    assert RecordMode("new_episodes") is RecordMode.NEW_EPISODES
    assert RecordMode.ONCE == "once"
    with pytest.raises(InvalidRecordMode) as info:
        RecordMode("sometimes")
    assert str(info.value) == (
        "unknown record mode 'sometimes': choose one of none, once, new_episodes, all"
    )
    with pytest.raises(ValueError):
        Tape(STREAM_TAPE, "sometimes")


def test_none_never_calls_the_real_transport_nor_opens_a_socket(tmp_path: Path) -> None:
    upstream = Upstream()
    before = len(_my_connects())
    with Tape(STREAM_TAPE, "none", real=upstream.transport) as tape:
        assert not tape.records
        client = tape.client()
        with client.responses.create(
            **json.loads(tape.recording.exchanges[0].request_body)
        ) as stream:
            assert [e.type for e in stream][-1] == "response.completed"
        # A request the tape lacks is an error, not a trip to the network.
        with pytest.raises(NoMatch):
            client.responses.create(model="gpt-4o", input="not recorded")
        assert len(tape.unplayed()) == 1
    assert upstream.calls == []
    assert _my_connects()[before:] == []


def test_none_with_a_missing_tape_says_how_to_record_it(tmp_path: Path) -> None:
    with pytest.raises(TapeMissing, match=r"does not exist .*\(record it with mode 'once'\)"):
        Tape(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("mode", ["none", "once", "new_episodes"])
def test_a_cut_or_empty_tape_is_refused_not_replayed_as_a_shorter_one(
    tmp_path: Path, mode: str
) -> None:
    from recorder.errors import TapeError

    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(STREAM_TAPE.read_text().splitlines(keepends=True)[:-2]))
    with pytest.raises(TapeError, match=r"is cut short: .*Record it again with record mode 'all'"):
        Tape(cut, mode)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(TapeError, match=r"empty\.jsonl: the file is empty$"):
        Tape(empty, mode)


def test_once_records_a_missing_tape_then_replays_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "t.jsonl"
    upstream = Upstream()
    with Tape(path, "once", real=upstream.transport) as tape:
        assert tape.records
        client = tape.client(api_key="sk-real")
        first = client.responses.create(model="gpt-test", input="one")
        with client.responses.create(model="gpt-test", input="two", stream=True) as stream:
            events = list(stream)
    assert len(upstream.calls) == 2
    recorded = load_tape(path)
    assert [x.path for x in recorded.exchanges] == ["/v1/responses", "/v1/responses"]
    assert recorded.exchanges[1].body == SSE
    # The API key never reaches the tape.
    assert "sk-real" not in path.read_text()

    # Second run: the tape exists, so `once` replays and the upstream is not called.
    with Tape(path, "once", real=upstream.transport) as tape:
        assert not tape.records
        client = tape.client()
        assert client.responses.create(model="gpt-test", input="one") == first
        with client.responses.create(model="gpt-test", input="two", stream=True) as stream:
            assert list(stream) == events
        assert tape.unplayed() == []
    assert len(upstream.calls) == 2


def test_new_episodes_replays_matches_and_records_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    upstream = Upstream()
    with Tape(path, "all", real=upstream.transport) as tape:
        tape.client(api_key="k").responses.create(model="gpt-test", input="old")
    old_text = path.read_text()

    with Tape(path, "new_episodes", real=upstream.transport) as tape:
        client = tape.client(api_key="k")
        assert client.responses.create(model="gpt-test", input="old").id == "resp_1"
        assert client.responses.create(model="gpt-test", input="new").id == "resp_2"
        assert tape.recorded == 1
    assert [c["input"] for c in upstream.calls] == ["old", "new"]
    # Old lines kept byte for byte, the new exchange appended as a new session.
    assert path.read_text().startswith(old_text)
    assert len(load_tape(path).exchanges) == 2

    with Tape(path, "none") as tape:
        client = tape.client()
        assert client.responses.create(model="gpt-test", input="new").id == "resp_2"
        assert client.responses.create(model="gpt-test", input="old").id == "resp_1"


def test_all_always_records_and_rewrites_the_tape(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    shutil.copy(STREAM_TAPE, path)
    upstream = Upstream()
    with Tape(path, "all", real=upstream.transport) as tape:
        assert tape.unplayed() == []  # nothing is replayed in `all`
        tape.client(api_key="k").responses.create(model="gpt-test", input="fresh")
    assert len(upstream.calls) == 1
    recorded = load_tape(path)
    assert len(recorded.exchanges) == 1
    assert json.loads(recorded.exchanges[0].request_body)["input"] == "fresh"


def test_a_recording_run_without_requests_leaves_the_tape_alone(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    shutil.copy(STREAM_TAPE, path)
    before = path.read_bytes()
    with Tape(path, "all", real=Upstream().transport):
        pass
    assert path.read_bytes() == before


def test_async_clients_record_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    upstream = Upstream()

    async def run(mode: str) -> str:
        async with Tape(path, mode, async_real=upstream.transport) as tape:
            client = tape.async_client(api_key="k")
            response = await client.responses.create(model="gpt-test", input="async")
            return response.id

    assert asyncio.run(run("once")) == "resp_1"
    assert asyncio.run(run("none")) == "resp_1"
    assert len(upstream.calls) == 1


def test_a_tape_recorded_live_carries_timing_that_original_pacing_follows(
    tmp_path: Path,
) -> None:
    from test_replay import FakeClock

    from replay import ReplayTransport

    path = tmp_path / "timed.jsonl"
    upstream = Upstream()
    with (
        Tape(path, "once", real=upstream.transport) as tape,
        tape.client(api_key="k").responses.create(model="gpt-test", input="t", stream=True) as s,
    ):
        expected = list(s)
    exchange = load_tape(path).exchanges[0]
    assert exchange.head_offset_ns is not None
    assert all(c.offset_ns is not None for c in exchange.chunks)
    clock = FakeClock()
    transport = ReplayTransport(path, pace="original", clock=clock)
    with (
        OpenAI(api_key="k", http_client=httpx2.Client(transport=transport)) as client,
        client.responses.create(model="gpt-test", input="t", stream=True) as stream,
    ):
        assert list(stream) == expected
    # Every wait lands the head or a frame exactly at its recorded offset.
    assert clock.now - 1_000_000_000 == max(
        exchange.head_offset_ns, *(c.offset_ns or 0 for c in exchange.chunks)
    )


def test_a_recording_with_redacted_fields_replays_the_same_code(tmp_path: Path) -> None:
    path = tmp_path / "redacted.jsonl"
    upstream = Upstream()

    def call(tape: Tape, user: str = "alice", run: str = "1") -> Any:
        client = tape.client(
            api_key="sk-real",
            default_headers={"X-Goog-Api-Key": "goog-secret"},
            default_query={"token": "tok-secret"},
        )
        return client.responses.create(
            model="gpt-test", input="one", metadata={"user": user, "run": run}
        )

    with Tape(path, "once", real=upstream.transport, redact_json_paths=["metadata.user"]) as tape:
        first = call(tape)
    text = path.read_text()
    assert "alice" not in text and "goog-secret" not in text and "tok-secret" not in text
    [recorded] = load_tape(path).exchanges
    assert recorded.redacted_paths == ("metadata.user",)

    # The same code replays: what was redacted is left out on both sides, headers too.
    with Tape(path, "none", match=MatchOptions.build(match_headers=True)) as tape:
        assert call(tape) == first
        assert tape.unplayed() == []
    # Only what was redacted: another value of a field kept in clear is a difference.
    with Tape(path, "none") as tape, pytest.raises(NoMatch) as info:
        call(tape, user="bob", run="2")
    assert 'body.metadata.run: recorded "1", got "2"' in str(info.value)
    assert "metadata.user" not in str(info.value) and "tok-secret" not in str(info.value)


def test_values_redacted_for_their_look_are_left_out_of_matching(tmp_path: Path) -> None:
    """A credential under a neutral header name, a key in a query value, a secret after a
    ``;``: redacted when recorded, and the same request replays."""
    path = tmp_path / "by-value.jsonl"
    key = "sk-" + "proj-" + "0123456789abcdefXYZ"  # in pieces, for secret scanners
    url = f"https://api.openai.com/v1/responses?a=1;key=S3CRET&relay={key}"
    headers = {"X-Relay": f"Bearer {key}", "X-Origin": key, "X-Team": "data"}
    body = {"model": "gpt-test", "input": "one"}

    def call(tape: Tape, url: str = url, team: str = "data") -> Any:
        with httpx2.Client(transport=tape.transport()) as client:
            return client.post(url, json=body, headers={**headers, "X-Team": team}).json()

    with Tape(path, "once", real=Upstream().transport) as tape:
        first = call(tape)
    text = path.read_text()
    assert key not in text and "S3CRET" not in text
    [recorded] = load_tape(path).exchanges
    assert recorded.url.endswith("?a=1;key=%3Credacted%3E&relay=%3Credacted%3E")
    stored = dict(recorded.request_headers)
    assert (stored["x-relay"], stored["x-origin"], stored["x-team"]) == (REDACTED, REDACTED, "data")
    with Tape(path, "none", match=MatchOptions.build(match_headers=True)) as tape:
        assert call(tape) == first
        assert tape.unplayed() == []
    # What was kept in clear still counts, after a ";" too.
    with Tape(path, "none", match=MatchOptions.build(match_headers=True)) as tape:
        with pytest.raises(NoMatch) as info:
            call(tape, url.replace("a=1", "a=2"))
        assert 'query a: recorded "1", got "2"' in str(info.value)
        assert key not in str(info.value) and "S3CRET" not in str(info.value)
        with pytest.raises(NoMatch, match='header x-team: recorded "data", got "ops"'):
            call(tape, team="ops")


def test_recorded_with_redact_json_paths_then_replayed_matches(
    store: EventStore, tmp_path: Path
) -> None:
    upstream = Upstream()
    args: dict[str, Any] = {"model": "gpt-test", "input": "hi", "metadata": {"user": "alice"}}
    with record(
        store,
        "redacted",
        transport=upstream.transport,
        api_key="sk-real",
        redact_json_paths=["metadata.user"],
    ) as client:
        recorded = client.responses.create(**args)
    tape = tmp_path / "redacted.jsonl"
    export_sessions(store, ["redacted"], tape)
    replay = ReplayTransport(tape)
    with OpenAI(api_key="unused", http_client=httpx2.Client(transport=replay)) as client:
        assert client.responses.create(**args) == recorded
    replay.check_all_played()

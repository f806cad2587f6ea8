"""Replay through the real OpenAI SDK, proven on every fixture tape.

The reference for "what the API sent" is the SDK reading the recorded bytes
itself, from an ``httpx2.MockTransport`` that answers each request with the
recorded status, headers and whole body in recorded order. Replay must give
the SDK exactly the same objects, event by event.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI, OpenAI

from recorder.events import Event, EventKind
from recorder.ingest import import_file
from recorder.store import migrate
from recorder.store.store import EventStore
from recorder.tape import write_tape
from replay import AsyncReplayTransport, ReplayTransport
from replay.reissue import areissue, reissue, responses_kwargs
from replay.source import Exchange, Recording, load, load_session, load_tape

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT / "fixtures" / "realdata"
TAPES = sorted(REALDATA.rglob("*.jsonl"))
BASE = "https://api.openai.com/v1"


def _id(path: Path) -> str:
    return path.stem


def test_every_fixture_tape_is_found() -> None:
    assert len(TAPES) >= 24


def _original_transport(recording: Recording) -> httpx2.MockTransport:
    """The SDK reading the recorded bytes directly: whole bodies, recorded order."""
    queue = list(recording.exchanges)

    def handler(request: httpx2.Request) -> httpx2.Response:
        exchange = queue.pop(0)
        assert exchange.status is not None
        return httpx2.Response(
            exchange.status, headers=exchange.replay_headers(), content=exchange.body
        )

    return httpx2.MockTransport(handler)


def _client(transport: httpx2.BaseTransport) -> OpenAI:
    return OpenAI(
        api_key="test", base_url=BASE, max_retries=0, http_client=httpx2.Client(transport=transport)
    )


def _run(recording: Recording, transport: httpx2.BaseTransport) -> list[Any]:
    with _client(transport) as client:
        return [reissue(client, x) for x in recording.exchanges]


async def _arun(recording: Recording, transport: httpx2.AsyncBaseTransport) -> list[Any]:
    http = httpx2.AsyncClient(transport=transport)
    async with AsyncOpenAI(api_key="test", base_url=BASE, max_retries=0, http_client=http) as c:
        return [await areissue(c, x) for x in recording.exchanges]


@pytest.mark.parametrize("tape", TAPES, ids=_id)
def test_replayed_bytes_are_the_recorded_bytes_frame_by_frame(tape: Path) -> None:
    recording = load_tape(tape)
    transport = ReplayTransport(recording)
    with httpx2.Client(transport=transport, base_url="https://api.openai.com") as http:
        for exchange in recording.exchanges:
            request = http.build_request(
                exchange.method,
                exchange.url,
                content=exchange.request_body,
                headers=dict(exchange.request_headers),
            )
            response = http.send(request, stream=True)
            try:
                chunks = list(response.iter_raw())
            finally:
                response.close()
            assert response.status_code == exchange.status
            assert response.headers.multi_items() == [
                (k.lower(), v) for k, v in exchange.replay_headers()
            ]
            # Event by event, never one blob: one chunk per recorded SSE/body event.
            assert chunks == [c.data for c in exchange.chunks if c.data]
            assert b"".join(chunks) == exchange.body
    assert transport.unplayed() == []


@pytest.mark.parametrize("tape", TAPES, ids=_id)
def test_sdk_objects_equal_the_sdk_reading_the_original_bytes(tape: Path) -> None:
    recording = load_tape(tape)
    expected = _run(recording, _original_transport(recording))
    replayed = _run(recording, ReplayTransport(recording))
    assert replayed == expected
    assert any(r is not None for r in replayed)
    # Two replays of the same tape are identical.
    assert _run(recording, ReplayTransport(recording)) == replayed


@pytest.mark.parametrize("tape", TAPES, ids=_id)
def test_async_replay_equals_the_sync_reference(tape: Path) -> None:
    recording = load_tape(tape)
    expected = _run(recording, _original_transport(recording))
    transport = AsyncReplayTransport(recording)
    assert asyncio.run(_arun(recording, transport)) == expected
    assert transport.unplayed() == []


def _streamed_responses(recording: Recording) -> list[Exchange]:
    return [
        x
        for x in recording.exchanges
        if x.streamed and x.path.endswith("/responses") and x.status == 200
    ]


STREAM_TAPES = [t for t in TAPES if _streamed_responses(load_tape(t))]


@pytest.mark.parametrize("tape", STREAM_TAPES, ids=_id)
def test_stream_helper_final_response_equals_the_original(tape: Path) -> None:
    recording = load_tape(tape)
    # Keep only the streamed exchanges, so both transports see the same requests.
    streams = Recording(recording.source, tuple(_streamed_responses(recording)))

    def final(transport: httpx2.BaseTransport) -> list[Any]:
        results: list[Any] = []
        with _client(transport) as client:
            for exchange in streams.exchanges:
                kwargs = responses_kwargs(exchange)
                kwargs.pop("stream", None)
                extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in _STREAM_PARAMS}
                try:
                    with client.responses.stream(**kwargs, extra_body=extra or None) as s:
                        events = list(s)
                        results.append((events, s.get_final_response()))
                except Exception as exc:  # a stream that failed: compare the failure
                    results.append((type(exc).__name__, str(exc)))
        return results

    expected = final(_original_transport(streams))
    assert final(ReplayTransport(streams)) == expected


_STREAM_PARAMS = {
    "input",
    "model",
    "background",
    "include",
    "instructions",
    "max_output_tokens",
    "max_tool_calls",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "prompt",
    "prompt_cache_key",
    "reasoning",
    "safety_identifier",
    "service_tier",
    "store",
    "stream_options",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "truncation",
    "user",
}


def test_replay_from_the_database_equals_replay_from_the_tape(db_url: str, tmp_path: Path) -> None:
    tape = REALDATA / "pydantic-ai/test_openai_responses_code_execution_download_file_stream.jsonl"
    migrate.upgrade(db_url)
    with EventStore.open(db_url) as store:
        result = import_file(store, tape)
    name = result.sessions[0][1]
    from_db = load_session(name, db_url)
    from_tape = load_tape(tape)
    assert from_db.exchanges == from_tape.exchanges
    assert load(name, db_url).exchanges == from_tape.exchanges
    # The transport accepts a session reference directly.
    replayed = _run(from_tape, ReplayTransport(name, db=db_url))
    assert replayed == _run(from_tape, _original_transport(from_tape))
    assert replayed[1] == b"number,square\r\n1,1\r\n2,4\r\n3,9\r\n4,16\r\n5,25\r\n"


# -- hand-made tapes: headers, errors, pacing --------------------------------------------


def _tape(
    tmp_path: Path,
    *,
    head_headers: list[list[str]] | None = None,
    frames: list[tuple[bytes, int | None]] | None = None,
    body: bytes | None = None,
    outcome: str = "completed",
    status: int | None = 200,
    url: str = f"{BASE}/responses",
    request: bytes = b'{"model":"m","input":"hi"}',
    head_offset: int | None = None,
) -> Path:
    sid, xid = "s" * 32, "x" * 32
    events = [
        Event(sid, EventKind.SESSION_OPEN, 0, recorded_at_ns=1, meta={"name": "hand"}),
        Event(
            sid,
            EventKind.REQUEST,
            0,
            xid,
            recorded_at_ns=1,
            offset_ns=0 if head_offset is not None else None,
            payload=request,
            meta={"method": "POST", "url": url, "headers": [["content-type", "application/json"]]},
        ),
    ]
    seq = 1
    if status is not None:
        events.append(
            Event(
                sid,
                EventKind.RESPONSE_HEAD,
                seq,
                xid,
                recorded_at_ns=1,
                offset_ns=head_offset,
                meta={
                    "status": status,
                    "headers": head_headers or [],
                    "streamed": frames is not None,
                },
            )
        )
        seq += 1
    for data, offset in frames or []:
        events.append(
            Event(sid, EventKind.SSE, seq, xid, recorded_at_ns=1, offset_ns=offset, payload=data)
        )
        seq += 1
    if body is not None:
        events.append(Event(sid, EventKind.BODY, seq, xid, recorded_at_ns=1, payload=body))
        seq += 1
    events.append(
        Event(sid, EventKind.EXCHANGE_END, seq, xid, recorded_at_ns=1, meta={"outcome": outcome})
    )
    events.append(Event(sid, EventKind.SESSION_CLOSE, 1, recorded_at_ns=2))
    path = tmp_path / "hand.jsonl"
    write_tape(events, path)
    return path


def test_recorded_content_encoding_does_not_break_the_decoded_body(tmp_path: Path) -> None:
    body = b'{"ok": true, "padding": "' + b"x" * 100 + b'"}'
    tape = _tape(
        tmp_path,
        head_headers=[
            ["content-type", "application/json"],
            ["content-encoding", "gzip"],
            ["content-length", "37"],
            ["transfer-encoding", "chunked"],
            ["x-request-id", "req_1"],
        ],
        body=body,
    )
    with httpx2.Client(transport=ReplayTransport(tape)) as http:
        response = http.post(f"{BASE}/responses", json={"input": "hi", "model": "m"})
    assert response.content == body
    assert response.headers["content-length"] == str(len(body))
    assert "content-encoding" not in response.headers
    assert "transfer-encoding" not in response.headers
    assert response.headers["x-request-id"] == "req_1"


def test_a_stream_that_broke_off_replays_its_bytes_then_the_error(tmp_path: Path) -> None:
    frames = [(b'event: a\ndata: {"type":"a"}\n\n', None), (b'event: b\ndata: {"ty', None)]
    tape = _tape(tmp_path, frames=frames, outcome="transport_error")
    got: list[bytes] = []
    with (
        httpx2.Client(transport=ReplayTransport(tape)) as http,
        http.stream("POST", f"{BASE}/responses", json={"model": "m", "input": "hi"}) as r,
        pytest.raises(httpx2.ReadError, match="replayed"),
    ):
        got.extend(r.iter_raw())
    assert got == [f for f, _ in frames]


def test_an_exchange_without_a_response_replays_as_a_connection_error(tmp_path: Path) -> None:
    tape = _tape(tmp_path, status=None, outcome="transport_error")
    with (
        httpx2.Client(transport=ReplayTransport(tape)) as http,
        pytest.raises(httpx2.ConnectError, match="replayed"),
    ):
        http.post(f"{BASE}/responses", json={"model": "m", "input": "hi"})


class FakeClock:
    """Time that moves only when someone sleeps: pacing is checked exactly."""

    def __init__(self) -> None:
        self.now = 1_000_000_000
        self.sleeps: list[float] = []

    def now_ns(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += round(seconds * 1e9)  # int() would truncate 1 ns off some float round trips

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


FRAMES = [
    (b'event: a\ndata: {"type":"a"}\n\n', 200_000_000),
    (b'event: b\ndata: {"type":"b"}\n\n', 500_000_000),
    (b'event: c\ndata: {"type":"c"}\n\n', 500_000_000),
    (b'event: d\ndata: {"type":"d"}\n\n', 1_500_000_000),
]


def _paced_chunks(transport: httpx2.BaseTransport) -> list[bytes]:
    with (
        httpx2.Client(transport=transport) as http,
        http.stream("POST", f"{BASE}/responses", json={"model": "m", "input": "hi"}) as r,
    ):
        return list(r.iter_raw())


def test_original_pacing_waits_the_recorded_gaps(tmp_path: Path) -> None:
    tape = _tape(tmp_path, frames=FRAMES, head_offset=100_000_000)
    clock = FakeClock()
    chunks = _paced_chunks(ReplayTransport(tape, pace="original", clock=clock))
    assert chunks == [f for f, _ in FRAMES]
    # head at 0.1 s, then frames at 0.2, 0.5, 0.5 (no wait), 1.5 s after the request.
    assert clock.sleeps == [0.1, 0.1, 0.3, 1.0]


def test_original_pacing_with_a_speed_factor(tmp_path: Path) -> None:
    tape = _tape(tmp_path, frames=FRAMES, head_offset=100_000_000)
    clock = FakeClock()
    _paced_chunks(ReplayTransport(tape, pace="original", speed=2.0, clock=clock))
    assert clock.sleeps == [0.05, 0.05, 0.15, 0.5]


def test_original_pacing_async_waits_the_same_gaps(tmp_path: Path) -> None:
    tape = _tape(tmp_path, frames=FRAMES, head_offset=100_000_000)
    clock = FakeClock()

    async def main() -> list[bytes]:
        transport = AsyncReplayTransport(tape, pace="original", clock=clock)
        async with (
            httpx2.AsyncClient(transport=transport) as http,
            http.stream("POST", f"{BASE}/responses", json={"model": "m", "input": "hi"}) as r,
        ):
            return [chunk async for chunk in r.aiter_raw()]

    assert asyncio.run(main()) == [f for f, _ in FRAMES]
    assert clock.sleeps == [0.1, 0.1, 0.3, 1.0]


def test_original_pacing_on_a_tape_without_timing_is_instant() -> None:
    # vercel/ai kept no request: any body matches it (see replay.matching).
    tape = ROOT / "fixtures/realdata/vercel-ai/azure-text.1.jsonl"
    clock = FakeClock()
    chunks = _paced_chunks(ReplayTransport(tape, pace="original", clock=clock))
    assert b"".join(chunks) == load_tape(tape).exchanges[0].body
    assert clock.sleeps == []


def test_original_pacing_really_sleeps_with_the_system_clock(tmp_path: Path) -> None:
    import time

    frames = [(b'event: a\ndata: {"type":"a"}\n\n', 30_000_000)]
    tape = _tape(tmp_path, frames=frames, head_offset=0)
    start = time.monotonic()
    _paced_chunks(ReplayTransport(tape, pace="original"))
    assert time.monotonic() - start >= 0.03  # a lower bound only: never flaky


def test_bad_pace_and_speed_are_one_line_errors(tmp_path: Path) -> None:
    from recorder.errors import CodetapeError

    tape = _tape(tmp_path, frames=FRAMES)
    with pytest.raises(
        CodetapeError, match=r"unknown pace 'fast': choose one of instant, original"
    ):
        ReplayTransport(tape, pace="fast")
    with pytest.raises(CodetapeError, match="speed must be a positive number"):
        ReplayTransport(tape, pace="original", speed=0)


def test_a_missing_tape_or_session_is_a_clear_error(tmp_path: Path) -> None:
    from recorder.errors import CodetapeError

    with pytest.raises(CodetapeError, match="no such tape"):
        ReplayTransport(tmp_path / "nope.jsonl")
    with pytest.raises(CodetapeError, match="neither a tape file nor a known session"):
        ReplayTransport("nope", db=f"sqlite:///{tmp_path / 'empty.db'}")

"""Property: however the network cuts a recorded body into chunks, capture stores the same events.

The splitter's own properties are in tests/test_sse.py; this checks the whole
capture path (transport, recorder, writer, store) against the splitter's
reference split of the body.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from fake_upstream import load_tape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.capture import CaptureSession, RecordingTransport
from recorder.events import EventKind
from recorder.sse import split_sse
from recorder.store import EventStore, migrate

BODIES = [
    load_tape("vercel-ai/openai-error.1.jsonl")[0].body,
    load_tape("pydantic-ai/test_openai_responses_stream.jsonl")[0].body,
    # CRLF line ends and a body cut mid-frame: the splitter's edge cases, live.
    b'event: a\r\ndata: {"type":"a","sequence_number":0}\r\n\r\n: keepalive\r\n\r\n'
    b'data: {"type":"response.completed","sequence_number":1}\r\n\r\ndata: {"partial',
]


class _Chunks(httpx2.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaptureSession]:
    url = f"sqlite:///{tmp_path_factory.mktemp('prop') / 'p.db'}"
    migrate.upgrade(url)
    with EventStore.open(url) as store, CaptureSession(store, "property") as capture:
        yield capture


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.sampled_from(BODIES), cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_stores_the_reference_frames(
    session: CaptureSession, body: bytes, cuts: list[int]
) -> None:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    chunks = [body[a:b] for a, b in itertools.pairwise(points)]

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, headers=headers, stream=_Chunks(chunks))

    transport = RecordingTransport(httpx2.MockTransport(handler), session=session)
    with httpx2.Client(transport=transport) as http:
        assert http.post("https://api.test/v1/responses", content=b"{}").content == body
    assert session.flush(30)
    x = session.store.exchanges(session.id)[-1]
    stored = [e for e in session.store.exchange_events(x.id) if e.kind is EventKind.SSE]
    reference = split_sse(body)
    assert [e.payload for e in stored] == [f.raw for f in reference]
    assert [(e.sse_event, e.sse_type, e.sequence_number) for e in stored] == [
        (f.event, f.type, f.sequence_number) for f in reference
    ]


def test_cancelling_an_async_stream_is_recorded(tmp_path: Path) -> None:
    from fake_upstream import Upstream

    from recorder.client import record_async

    url = f"sqlite:///{tmp_path / 'c.db'}"
    migrate.upgrade(url)
    upstream = Upstream(
        load_tape("openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl")
    )

    async def run() -> None:
        async with record_async(
            url,
            "cancel",
            transport=upstream.async_transport(),
            api_key="k",
            base_url="https://api.openai.com/v1",
            max_retries=0,
        ) as client:
            seen = asyncio.Event()

            async def consume() -> None:
                stream = await client.responses.create(model="m", input="x", stream=True)
                async with stream:  # closes the response when the task is cancelled
                    async for _ in stream:
                        seen.set()
                        await asyncio.sleep(0)

            task = asyncio.create_task(consume())
            await seen.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    with EventStore.open(url) as store:
        [x] = store.exchanges(store.find_session("cancel").id)
        assert x.outcome == "client_closed"
        assert store.exchange_events(x.id)[-1].meta["error"] == "CancelledError"
        assert store.verify().open_exchanges == []

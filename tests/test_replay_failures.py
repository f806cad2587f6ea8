"""Recorded failures replay as the exception the SDK saw live, through the real SDK.

Each case records a call through ``recorder.record`` while the transport under
it fails (before any response, or mid-stream after a few frames), keeps the
exception the SDK raised live, and replays the exported tape through
``ReplayTransport`` and through the replay server: the SDK raises the same
class (``APITimeoutError`` for a timeout, ``APIConnectionError`` otherwise)
caused by the same ``httpx2`` exception class.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest

from recorder.client import record
from recorder.export import export_sessions
from recorder.store import EventStore
from replay import AsyncReplayTransport, ReplayTransport
from replay.server import ReplayApp, ReplayServer
from replay.source import load_tape

BASE = "https://api.openai.com/v1"
# A fake key, spelled in pieces so that secret scanners do not flag this file.
KEY = "sk-" + "failures-0123456789"
FRAMES = [
    b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
    b'"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress",'
    b'"model":"m","output":[],"tools":[]}}\n\n',
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}\n\n',
]


class _Failing(httpx2.SyncByteStream):
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __iter__(self) -> Iterator[bytes]:
        yield from FRAMES
        raise self.exc


def failing_transport(where: str, exc_class: type[httpx2.TransportError]) -> httpx2.MockTransport:
    def handle(request: httpx2.Request) -> httpx2.Response:
        exc = exc_class("the fake upstream failed", request=request)
        if where == "before":
            raise exc
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Failing(exc)
        )

    return httpx2.MockTransport(handle)


def call(client: openai.OpenAI) -> None:
    for _ in client.responses.create(model="m", input="x", stream=True):
        pass


def seen(error: BaseException) -> tuple[type[BaseException], type[BaseException] | None]:
    cause = error.__cause__
    return type(error), None if cause is None else type(cause)


CASES = [
    ("before", httpx2.ConnectTimeout),
    ("before", httpx2.ReadTimeout),
    ("before", httpx2.PoolTimeout),
    ("before", httpx2.WriteTimeout),
    ("before", httpx2.ConnectError),
    ("before", httpx2.RemoteProtocolError),
    ("mid", httpx2.ReadTimeout),
    ("mid", httpx2.ReadError),
    ("mid", httpx2.RemoteProtocolError),
]


def recorded_failure(
    store: EventStore, tmp_path: Path, where: str, exc_class: type[httpx2.TransportError]
) -> tuple[Path, tuple[type[BaseException], type[BaseException] | None]]:
    name = f"{where}-{exc_class.__name__}"
    with (
        record(
            store,
            name,
            transport=failing_transport(where, exc_class),
            api_key=KEY,
            base_url=BASE,
            max_retries=0,
        ) as client,
        pytest.raises(openai.APIConnectionError) as live,
    ):
        call(client)
    tape = tmp_path / f"{name}.jsonl"
    export_sessions(store, [name], tape)
    return tape, seen(live.value)


@pytest.mark.parametrize(("where", "exc_class"), CASES)
def test_replay_transport_raises_what_the_sdk_saw_live(
    store: EventStore, tmp_path: Path, where: str, exc_class: type[httpx2.TransportError]
) -> None:
    tape, live = recorded_failure(store, tmp_path, where, exc_class)
    expected_sdk = (
        openai.APITimeoutError
        if issubclass(exc_class, httpx2.TimeoutException)
        else openai.APIConnectionError
    )
    assert live == (expected_sdk, exc_class)
    http = httpx2.Client(transport=ReplayTransport(tape))
    with (
        openai.OpenAI(api_key=KEY, base_url=BASE, http_client=http, max_retries=0) as client,
        pytest.raises(openai.APIConnectionError) as replayed,
    ):
        call(client)
    assert seen(replayed.value) == live


def test_async_replay_raises_what_the_sdk_saw_live(store: EventStore, tmp_path: Path) -> None:
    tape, live = recorded_failure(store, tmp_path, "mid", httpx2.ReadTimeout)

    async def main() -> tuple[type[BaseException], type[BaseException] | None]:
        http = httpx2.AsyncClient(transport=AsyncReplayTransport(tape))
        async with openai.AsyncOpenAI(
            api_key=KEY, base_url=BASE, http_client=http, max_retries=0
        ) as client:
            try:
                stream = await client.responses.create(model="m", input="x", stream=True)
                async for _ in stream:
                    pass
            except openai.APIConnectionError as exc:
                return seen(exc)
        raise AssertionError("the replay did not fail")

    assert asyncio.run(main()) == live == (openai.APITimeoutError, httpx2.ReadTimeout)


def test_a_failure_recorded_without_its_class_replays_by_kind(tmp_path: Path) -> None:
    from dataclasses import replace

    from replay.transport import failure_class

    x = load_tape(
        Path(__file__).resolve().parents[1]
        / "fixtures/realdata/pydantic-ai/test_openai_responses_stream.jsonl"
    ).exchanges[0]
    broken = replace(x, outcome="transport_error")
    assert failure_class(replace(broken, failure="MyOwnError")) is httpx2.ReadError
    assert failure_class(replace(broken, status=None)) is httpx2.ConnectError
    assert failure_class(replace(broken, timeout=True)) is httpx2.TimeoutException
    assert failure_class(replace(broken, failure="PoolTimeout")) is httpx2.PoolTimeout
    assert failure_class(replace(broken, failure="Client")) is httpx2.ReadError


@pytest.mark.parametrize("where", ["before", "mid"])
def test_the_replay_server_lets_a_recorded_timeout_time_out(
    store: EventStore, tmp_path: Path, where: str
) -> None:
    tape, live = recorded_failure(store, tmp_path, where, httpx2.ReadTimeout)
    app = ReplayApp(load_tape(tape))
    with (
        ReplayServer(app) as server,
        openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0, timeout=0.5) as client,
        pytest.raises(openai.APIConnectionError) as replayed,
    ):
        call(client)
    assert seen(replayed.value) == live == (openai.APITimeoutError, httpx2.ReadTimeout)


def test_the_replay_server_stops_while_a_replayed_timeout_keeps_a_client_waiting(
    store: EventStore, tmp_path: Path
) -> None:
    tape, _ = recorded_failure(store, tmp_path, "mid", httpx2.ReadTimeout)
    app = ReplayApp(load_tape(tape))
    server = ReplayServer(app)
    waiting = threading.Event()
    outcome: list[BaseException] = []

    def client_side() -> None:
        with openai.OpenAI(
            api_key=KEY, base_url=server.base_url, max_retries=0, timeout=120
        ) as client:
            try:
                for _ in client.responses.create(model="m", input="x", stream=True):
                    waiting.set()
            except openai.APIError as exc:
                outcome.append(exc)

    thread = threading.Thread(target=client_side, daemon=True)
    thread.start()
    assert waiting.wait(30)
    server.close()  # must not wait for the client's two minutes
    thread.join(30)  # guards against a hang only
    assert not thread.is_alive()
    assert [type(e) for e in outcome] == [openai.APIConnectionError]

"""Concurrent recording: threads, asyncio tasks, and several processes on one PostgreSQL log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fake_upstream import Upstream, load_tape

from recorder.capture.session import WriterMode
from recorder.client import record, record_async
from recorder.events import EventKind
from recorder.store import EventStore, migrate

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
STREAMS = 16
BASE = "https://api.openai.com/v1"


def assert_every_stream_whole(store: EventStore, name: str, expected: int) -> None:
    body = load_tape(CI_STREAM)[0].body
    sessions = [s for s in store.sessions() if s.name == name]
    exchanges = [x for s in sessions for x in store.exchanges(s.id)]
    assert len(exchanges) == expected
    for x in exchanges:
        events = store.exchange_events(x.id)
        assert [e.seq for e in events] == list(range(len(events)))
        sse = [e for e in events if e.kind is EventKind.SSE]
        assert b"".join(e.payload for e in sse) == body
        numbers = [e.sequence_number for e in sse]
        assert numbers == sorted(numbers)  # type: ignore[type-var]
        assert x.outcome == "completed"
    report = store.verify()
    assert report.ok and report.open_exchanges == [] and report.capture_gaps == 0


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_sixteen_threads_into_one_session(store: EventStore, writer: WriterMode) -> None:
    upstream = Upstream(load_tape(CI_STREAM) * STREAMS, any_path=True)
    start = threading.Barrier(STREAMS)
    errors: list[BaseException] = []
    with record(
        store,
        "threads",
        transport=upstream.transport(),
        api_key="k",
        base_url=BASE,
        writer=writer,
    ) as client:

        def one() -> None:
            try:
                start.wait(30)
                for _ in client.responses.create(model="m", input="x", stream=True):
                    pass
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(STREAMS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    assert_every_stream_whole(store, "threads", STREAMS)


def test_sixteen_asyncio_tasks_into_one_session(store: EventStore) -> None:
    upstream = Upstream(load_tape(CI_STREAM) * STREAMS, any_path=True)

    async def run() -> None:
        async with record_async(
            store, "tasks", transport=upstream.async_transport(), api_key="k", base_url=BASE
        ) as client:

            async def one() -> None:
                stream = await client.responses.create(model="m", input="x", stream=True)
                async for _ in stream:
                    pass

            await asyncio.gather(*(one() for _ in range(STREAMS)))

    asyncio.run(run())
    assert_every_stream_whole(store, "tasks", STREAMS)


_CHILD = """
import sys, threading
sys.path.insert(0, {tests!r})
from fake_upstream import Upstream, load_tape
from recorder.client import record
upstream = Upstream(load_tape({tape!r}) * 2, any_path=True)
with record({url!r}, "procs", transport=upstream.transport(), api_key="k",
            base_url="https://api.openai.com/v1") as client:
    def one():
        for _ in client.responses.create(model="m", input="x", stream=True):
            pass
    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
"""


@pytest.mark.slow
def test_several_processes_write_one_postgresql_log(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    code = _CHILD.format(tests=str(Path(__file__).parent), tape=CI_STREAM, url=pg_url)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    with EventStore.open(pg_url) as store:
        assert_every_stream_whole(store, "procs", 6)

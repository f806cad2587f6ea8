"""A store that is only busy (its write lock held elsewhere) delays the recording, never loses it.

The lock is real: another connection holds SQLite's write lock (``BEGIN
IMMEDIATE``) for longer than the busy timeout in force, or PostgreSQL's
``LOCK TABLE events IN ACCESS EXCLUSIVE MODE``. Meanwhile the stream reaches
the SDK, the events wait in memory (up to the session's bound, where the
producer is held back), and an asyncio loop recording the stream keeps
serving its other coroutines.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import openai
import psycopg
import pytest
import sqlalchemy as sa
from fake_upstream import Upstream, load_tape

from recorder.capture import CaptureSession
from recorder.capture.session import WriterMode
from recorder.client import record, record_async
from recorder.events import EventKind
from recorder.store import EventStore, migrate
from recorder.store.store import APPEND_LOCK

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
BASE = "https://api.openai.com/v1"
WRITERS = ["thread", "process"]
PG_HOLD = 3.0
TICK = 0.005


@pytest.fixture
def busy_store(migrated_db_url: str) -> Iterator[EventStore]:
    """A store whose SQLite busy timeout is 1 s (the default is 30 s), so a test can outlast it."""
    url = (
        migrated_db_url + "?timeout=1" if migrated_db_url.startswith("sqlite") else migrated_db_url
    )
    with EventStore.open(url) as store:
        yield store


def hold_seconds(store: EventStore, margin: float = 5.0) -> float:
    """Longer than a writer waits for the lock before it is told the database is locked.

    ``margin``: how much longer on SQLite (by default, time enough for the SDK to
    finish inside it on a loaded runner too).
    """
    if store.backend != "sqlite":
        return PG_HOLD
    with store.engine.connect() as conn:
        busy_ms = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    return float(busy_ms or 0) / 1000 + margin


@contextmanager
def write_lock_held(
    store: EventStore,
    seconds: float,
    until: threading.Event | None = None,
    how: str = "table",
) -> Iterator[threading.Event]:
    """Hold the log's write lock from another connection for ``seconds`` (in a thread),
    and then until ``until`` is set, if given. On PostgreSQL ``how`` is ``"table"``
    (``LOCK TABLE events``) or ``"advisory"`` (the appends' own advisory lock).

    Yields once the lock is held; the event it yields is set when it is released.
    """
    taken, released = threading.Event(), threading.Event()

    def hold() -> None:
        if store.backend == "sqlite":
            conn = sqlite3.connect(sa.make_url(store.url).database or "", isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
        else:
            pg = sa.make_url(store.url).set(drivername="postgresql")
            conn = psycopg.connect(pg.render_as_string(hide_password=False))  # type: ignore[assignment]
            conn.execute("BEGIN")
            if how == "advisory":
                conn.execute(f"SELECT pg_advisory_xact_lock({APPEND_LOCK})")
            else:
                conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        taken.set()
        time.sleep(seconds)
        if until is not None:
            until.wait(120)
        conn.execute("COMMIT")
        conn.close()
        released.set()

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(30)
    try:
        yield released
    finally:
        thread.join(seconds + 30)


@pytest.mark.slow
@pytest.mark.parametrize("writer", WRITERS)
def test_a_store_locked_past_its_timeout_delays_the_stream_and_loses_nothing(
    busy_store: EventStore, writer: WriterMode
) -> None:
    _record_through_a_held_lock(busy_store, writer, "table")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("writer", WRITERS)
def test_the_append_lock_held_elsewhere_delays_the_store_not_the_sdk(
    pg_url: str, writer: WriterMode
) -> None:
    """Another writer's transaction holding the appends' advisory lock: the SDK reads on."""
    migrate.upgrade(pg_url)
    with EventStore.open(pg_url) as store:
        _record_through_a_held_lock(store, writer, "advisory")


def _record_through_a_held_lock(store: EventStore, writer: WriterMode, how: str) -> None:
    """Record the code interpreter stream, the log locked from frame 100 on (see
    :func:`write_lock_held`): the SDK gets every event before the lock is released,
    and the store gets them all, in order, once it is."""
    session = CaptureSession(store, "busy", writer=writer)
    # Held past the busy timeout, then until the SDK has read the whole stream: a
    # recorder that held the stream back on the lock would see it released first
    # (after 120 s), however slow the machine.
    hold = hold_seconds(store, margin=1.0)
    streamed = threading.Event()
    locks: list[threading.Event] = []
    lock_cm = None

    def at_frame(_exchange: int, k: int) -> None:
        nonlocal lock_cm
        if k == 100:  # the rest of the stream arrives while the log is locked
            assert session.flush(30)
            lock_cm = write_lock_held(store, hold, until=streamed, how=how)
            locks.append(lock_cm.__enter__())

    upstream = Upstream(load_tape(CI_STREAM), before_frame=at_frame)
    with record(store, session, transport=upstream.transport(), api_key="k", base_url=BASE) as c:
        count = sum(1 for _ in c.responses.create(model="m", input="x", stream=True))
    assert count == 491 and not locks[0].is_set()  # the SDK had it all during the lock
    streamed.set()
    session.close()  # waits for the lock, then stores the rest
    assert lock_cm is not None
    lock_cm.__exit__(None, None, None)

    [x] = store.exchanges(session.id)
    assert x.sse_events == 491 and x.outcome == "completed"
    report = store.verify()
    assert report.ok and report.capture_gaps == 0 and report.open_exchanges == []
    stats = session.stats
    assert stats.events_lost == 0 and stats.store_errors == 0
    events = store.exchange_events(x.id)
    assert [e.seq for e in events] == list(range(len(events)))  # whole, no gap
    body = b"".join(e.payload for e in events if e.kind is EventKind.SSE)
    assert body == upstream.scripts[0].body


# -- the event loop -------------------------------------------------------------------


def delta_frames(count: int, size: int) -> list[bytes]:
    """A long Responses stream of ``count`` code deltas of ``size`` bytes each."""

    def frame(n: int, kind: str, **fields: object) -> bytes:
        data = json.dumps({"type": kind, "sequence_number": n, **fields})
        return f"event: {kind}\ndata: {data}\n\n".encode()

    response = {"id": "resp_busy", "object": "response", "status": "in_progress", "output": []}
    frames = [frame(0, "response.created", response=response)]
    for n in range(1, count + 1):
        frames.append(
            frame(
                n,
                "response.code_interpreter_call_code.delta",
                output_index=0,
                item_id="ci_busy",
                delta=f"{n:06d}" + "x" * size,
            )
        )
    done = {**response, "status": "completed"}
    frames.append(frame(count + 1, "response.completed", response=done))
    return frames


class _Frames(httpx2.AsyncByteStream):
    """One frame per chunk, a millisecond's pause every ``burst`` frames, as a socket would."""

    def __init__(self, frames: list[bytes], burst: int = 1) -> None:
        self._frames = frames
        self._burst = burst

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for n, chunk in enumerate(self._frames, start=1):
            yield chunk
            await asyncio.sleep(0.001 if n % self._burst == 0 else 0)


@pytest.mark.slow
@pytest.mark.parametrize("bound", [None, 256 * 1024], ids=["default-bound", "small-bound"])
@pytest.mark.parametrize("writer", WRITERS)
def test_the_event_loop_keeps_running_while_the_store_is_locked(
    busy_store: EventStore, writer: WriterMode, bound: int | None
) -> None:
    store = busy_store
    # 5,000 frames, 3.5 MB: within the default bound, past the small one (and
    # more than the old recorder queued before it slept on the loop).
    frames = delta_frames(5000, 600)
    options = {} if bound is None else {"max_pending_bytes": bound}
    session = CaptureSession(store, "loop", writer=writer, **options)
    assert session.flush(30)

    async def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, headers=headers, stream=_Frames(frames, burst=10))

    lags: list[float] = []
    blocked: list[float] = []
    received_at: list[float] = []

    async def run() -> None:
        stop = asyncio.Event()
        # The SDK's first call builds its models on the loop: not the recorder's doing.
        warm = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
        async with openai.AsyncOpenAI(api_key="k", base_url=BASE, http_client=warm) as plain:
            async for _event in await plain.responses.create(model="m", input="x", stream=True):
                break
        schedstat = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat")

        def on_cpu_ns() -> int:
            # Running plus waiting for a CPU: what a busy machine costs, not blocking.
            run_ns, wait_ns, _ = schedstat.read_text().split()
            return int(run_ns) + int(wait_ns)

        async def ticker() -> None:
            while not stop.is_set():
                wall, cpu = time.perf_counter_ns(), on_cpu_ns()
                await asyncio.sleep(TICK)
                wall, cpu = time.perf_counter_ns() - wall, on_cpu_ns() - cpu
                lags.append(wall / 1e9 - TICK)
                blocked.append((wall - cpu) / 1e9 - TICK)

        ticks = asyncio.create_task(ticker())
        async with record_async(
            store,
            session,
            transport=httpx2.MockTransport(handler),
            api_key="k",
            base_url=BASE,
            max_retries=0,
        ) as client:
            async for _event in await client.responses.create(model="m", input="x", stream=True):
                received_at.append(time.monotonic())
        stop.set()
        await ticks

    # Within the bound the lock is held until the whole stream went through.
    streamed = threading.Event() if bound is None else None
    with write_lock_held(store, hold_seconds(store), until=streamed) as released:
        asyncio.run(run())
        released_at = time.monotonic() if not released.is_set() else 0.0
        if streamed is not None:
            streamed.set()
    session.close()

    assert len(received_at) == len(frames)
    # The loop kept serving the ticker: its thread was never blocked (asleep
    # on a lock, a sleep, the GIL) for long. Time spent waiting for a CPU on a
    # busy machine is left out: it is not the recorder blocking the loop.
    p99 = statistics.quantiles(blocked, n=100)[98]
    lag = statistics.quantiles(lags, n=100)[98]
    assert p99 < 0.020, (
        f"p99 blocked {p99 * 1e3:.1f} ms, max {max(blocked) * 1e3:.1f} ms "
        f"(wall-clock tick lag p99 {lag * 1e3:.1f} ms)"
    )
    # Within the bound the stream went on during the lock; at the bound it was
    # held back (the producer awaited) until the lock went.
    if bound is None:
        assert released_at  # the whole stream went through during the lock
    else:
        assert not released_at or sum(1 for t in received_at if t < released_at) < len(frames)
    [x] = store.exchanges(session.id)
    assert x.sse_events == len(frames) and x.outcome == "completed"
    report = store.verify()
    assert report.ok and report.capture_gaps == 0 and report.open_exchanges == []
    assert session.stats.events_lost == 0


def test_a_busy_timeout_in_the_url_is_what_sqlite_waits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}?timeout=1.5"
    migrate.upgrade(url)
    with EventStore.open(url) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1500
    from recorder.errors import DatabaseUnavailable

    with pytest.raises(DatabaseUnavailable, match="timeout='soon'"):
        EventStore.open(f"sqlite:///{tmp_path / 't.db'}?timeout=soon")

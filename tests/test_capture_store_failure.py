"""The store failing under a live capture: the stream goes on, the loss is recorded.

Failures are real database failures: a trigger that makes the database refuse
inserts (as a full disk would), or a PostgreSQL database that stops taking
connections. Pacing uses the fake upstream's per-frame hook, so what is
stored before, during and after the failure is known exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fake_upstream import Upstream, load_tape

from recorder.capture import CaptureError, CaptureSession
from recorder.capture.session import WriterMode
from recorder.client import record
from recorder.events import EventKind
from recorder.store import EventStore, migrate

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
BASE = "https://api.openai.com/v1"


def refuse_inserts(store: EventStore, on: bool) -> None:
    """Make the database refuse (or take again) every insert into ``events``."""
    with store.engine.begin() as conn:
        if store.backend == "sqlite":
            if on:
                conn.exec_driver_sql(
                    "CREATE TRIGGER test_refuse BEFORE INSERT ON events "
                    "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
                )
            else:
                conn.exec_driver_sql("DROP TRIGGER test_refuse")
        elif on:
            conn.exec_driver_sql(
                "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER test_refuse BEFORE INSERT ON events "
                "FOR EACH ROW EXECUTE FUNCTION test_refuse()"
            )
        else:
            conn.exec_driver_sql("DROP TRIGGER test_refuse ON events")
            conn.exec_driver_sql("DROP FUNCTION test_refuse()")


def at_frames(actions: dict[int, Callable[[], None]]) -> Callable[[int, int], None]:
    def hook(_exchange: int, k: int) -> None:
        action = actions.get(k)
        if action is not None:
            action()

    return hook


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_refused_writes_become_a_capture_gap_and_the_stream_is_untouched(
    store: EventStore, writer: WriterMode
) -> None:
    session = CaptureSession(store, "refused", writer=writer)

    def fail() -> None:
        assert session.flush(30)
        refuse_inserts(store, True)

    def recover() -> None:
        assert session.flush(30)  # the refused batch has been dropped by now
        refuse_inserts(store, False)

    upstream = Upstream(load_tape(CI_STREAM), before_frame=at_frames({100: fail, 300: recover}))
    with record(store, session, transport=upstream.transport(), api_key="k", base_url=BASE) as c:
        received = [
            e.model_dump_json() for e in c.responses.create(model="m", input="x", stream=True)
        ]
    session.close()

    assert len(received) == 491  # the SDK saw the whole stream
    stats = session.stats
    assert stats.store_errors >= 1 and stats.events_lost >= 391
    [x] = store.exchanges(session.id)
    events = store.exchange_events(x.id)
    assert [e.seq for e in events] == list(range(len(events)))
    sse = [e for e in events if e.kind is EventKind.SSE]
    assert len(sse) == 100
    assert (
        b"".join(e.payload for e in sse)
        == upstream.scripts[0].body[: sum(len(e.payload) for e in sse)]
    )
    end = events[-1]
    assert end.kind is EventKind.EXCHANGE_END and end.meta["outcome"] == "completed"
    assert end.meta["capture_gap"]["lost_events"] == 391
    gaps = [e for e in store.session_events(session.id) if e.kind is EventKind.CAPTURE_GAP]
    assert len(gaps) == 1 and gaps[0].meta["exchange"] == x.id
    assert "disk full (test)" in gaps[0].meta["reason"]
    report = store.verify()
    assert report.ok and report.capture_gaps == 1 and report.open_exchanges == []


def test_strict_mode_does_not_send_an_unaudited_request(store: EventStore) -> None:
    upstream = Upstream(load_tape(CI_STREAM))
    with record(
        store,
        "strict",
        transport=upstream.transport(),
        api_key="k",
        base_url=BASE,
        on_store_error="raise",
        max_retries=0,
    ) as client:
        refuse_inserts(store, True)
        try:
            with pytest.raises(CaptureError, match="on_store_error='raise'"):
                client.responses.create(model="m", input="x", stream=True)
        finally:
            refuse_inserts(store, False)
        with pytest.raises(CaptureError):  # the session stays stopped
            client.responses.create(model="m", input="x", stream=True)
    assert upstream.requests == []  # nothing reached the API


def test_strict_mode_stops_a_stream_whose_capture_fails(store: EventStore) -> None:
    session = CaptureSession(store, "strict-mid", on_store_error="raise")

    def fail() -> None:
        assert session.flush(30)
        refuse_inserts(store, True)

    upstream = Upstream(load_tape(CI_STREAM), before_frame=at_frames({50: fail}))
    try:
        with (
            record(store, session, transport=upstream.transport(), api_key="k", base_url=BASE) as c,
            pytest.raises(CaptureError),
        ):
            for _ in c.responses.create(model="m", input="x", stream=True):
                pass
    finally:
        refuse_inserts(store, False)
        session.close()
    assert store.verify().ok


@pytest.mark.postgres
def test_database_gone_then_back_loses_nothing(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    db = sa.make_url(pg_url).database
    admin = sa.create_engine(
        sa.make_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    store = EventStore.open(pg_url)
    session = CaptureSession(store, "outage")
    outage_seen = threading.Event()

    def cut() -> None:
        assert session.flush(30)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            )

    def restore() -> None:
        # Hold the outage until the writer has met it at least once.
        for _ in range(3000):
            if session.stats.store_errors:
                outage_seen.set()
                break
            threading.Event().wait(0.01)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')

    upstream = Upstream(load_tape(CI_STREAM), before_frame=at_frames({100: cut, 200: restore}))
    try:
        with record(
            store, session, transport=upstream.transport(), api_key="k", base_url=BASE
        ) as c:
            count = sum(1 for _ in c.responses.create(model="m", input="x", stream=True))
        session.close()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        admin.dispose()
    assert count == 491 and outage_seen.is_set()
    [x] = store.exchanges(session.id)
    assert x.sse_events == 491 and x.outcome == "completed"
    report = store.verify()
    assert report.ok and report.capture_gaps == 0 and report.open_exchanges == []
    assert session.stats.events_lost == 0
    store.close()

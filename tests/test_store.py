"""Contract tests for the event store, run on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy as sa

from recorder.errors import (
    AmbiguousSession,
    DatabaseUnavailable,
    ImmutableLogError,
    NotUpgraded,
    StoreError,
    UnknownSession,
)
from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore, migrate


def session_batch(name: str = "s", frames: int = 3) -> tuple[str, str, list[Event]]:
    sid, xid = new_id(), new_id()
    batch = [
        Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": name, "labels": {"team": "a"}}),
        Event(
            sid,
            EventKind.REQUEST,
            0,
            xid,
            payload=b'{"model":"m"}',
            meta={"method": "POST", "url": "https://x/v1/responses"},
        ),
        Event(sid, EventKind.RESPONSE_HEAD, 1, xid, meta={"status": 200}),
    ]
    for i in range(frames):
        batch.append(
            Event(
                sid,
                EventKind.SSE,
                2 + i,
                xid,
                offset_ns=1000 * i,
                payload=f'event: e\ndata: {{"type":"e","sequence_number":{i}}}\n\n'.encode(),
                sse_event="e",
                sse_type="e",
                sequence_number=i,
                response_id="resp_1",
            )
        )
    batch.append(Event(sid, EventKind.EXCHANGE_END, 2 + frames, xid, meta={"outcome": "completed"}))
    batch.append(Event(sid, EventKind.SESSION_CLOSE, 1))
    return sid, xid, batch


def test_append_assigns_increasing_positions_and_reads_back_exactly(store: EventStore) -> None:
    _sid, _xid, batch = session_batch()
    positions = store.append(batch)
    assert positions == list(range(1, len(batch) + 1))
    back = list(store.iter_events())
    assert [e.position for e in back] == positions
    for original, stored in zip(batch, back, strict=True):
        assert stored.to_event() == Event(
            **{**{f: getattr(original, f) for f in original.__slots__}, "meta": stored.meta}
        )
        assert stored.meta == dict(original.meta)
        assert stored.payload == original.payload
    assert store.last_position() == len(batch)
    second = store.append(session_batch()[2])
    assert second[0] == len(batch) + 1


def test_binary_payload_and_unicode_meta_survive(store: EventStore) -> None:
    sid = new_id()
    payload = bytes(range(256)) * 3
    store.append(
        [Event(sid, EventKind.SESSION_OPEN, 0, payload=payload, meta={"name": "ünïcödé ✓"})]
    )
    (ev,) = store.session_events(sid)
    assert ev.payload == payload
    assert ev.meta["name"] == "ünïcödé ✓"


def test_seq_none_takes_next_in_stream(store: EventStore) -> None:
    sid, _xid, batch = session_batch()
    store.append(batch[:-1])
    store.append([Event(sid, EventKind.CAPTURE_GAP, None, meta={"reason": "x"})])
    store.append([Event(sid, EventKind.SESSION_CLOSE, None)])
    own = [e for e in store.session_events(sid) if e.exchange_id is None]
    assert [(e.kind, e.seq) for e in own] == [
        (EventKind.SESSION_OPEN, 0),
        (EventKind.CAPTURE_GAP, 1),
        (EventKind.SESSION_CLOSE, 2),
    ]
    assert store.verify().ok


def test_a_failing_batch_writes_nothing(store: EventStore) -> None:
    sid, xid, batch = session_batch()
    store.append(batch)
    before = store.last_position()
    # A second event claiming seq 0 of the same exchange violates uniqueness.
    bad = [Event(sid, EventKind.CAPTURE_GAP, None), Event(sid, EventKind.REQUEST, 0, xid)]
    with pytest.raises(StoreError):
        store.append(bad)
    assert store.last_position() == before
    assert store.verify().ok


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET payload = payload",
        "UPDATE events SET seq = seq + 100 WHERE position = 2",
        "DELETE FROM events WHERE position = 1",
        "DELETE FROM events",
    ],
)
def test_database_refuses_update_and_delete(store: EventStore, statement: str) -> None:
    store.append(session_batch()[2])
    with pytest.raises(sa.exc.DBAPIError, match="immutable"), store.engine.begin() as conn:
        conn.exec_driver_sql(statement)
    assert store.verify().ok
    assert store.last_position() == 8


# -- no conflict clause replaces an event ---------------------------------------
# Each statement offers a forged copy of an existing lean row whose hash is
# recomputed on the real predecessor, so a replacement that got through would
# pass `verify`. :new_position is a free position (the row would move there).
# Stream uniqueness is an insert trigger, not a unique index (the PostgreSQL
# table must stay partitionable by position), so no ON CONFLICT clause can
# name the stream: the stream clash is offered by moving the row instead.

_COLUMNS = [
    "position", "session_key", "exchange_key", "seq", "kind_key", "recorded_at_ns", "offset_ns",
    "sse_event_key", "sse_type_key", "sequence_number", "response_key", "item_key", "meta",
    "codec", "payload", "hash_format_key", "hash",
]  # fmt: skip
_VALUES = "(" + ", ".join(f":{c}" for c in _COLUMNS) + ")"
_MOVED = "(" + ", ".join(":new_position" if c == "position" else f":{c}" for c in _COLUMNS) + ")"
_INTO = "INTO events (" + ", ".join(_COLUMNS) + ") VALUES "
_SET = "payload = excluded.payload, hash = excluded.hash"

SQLITE_CONFLICTS = {
    "insert or replace": f"INSERT OR REPLACE {_INTO}{_VALUES}",
    "replace into": f"REPLACE {_INTO}{_VALUES}",
    "insert or replace, stream clash only": f"INSERT OR REPLACE {_INTO}{_MOVED}",
    "insert or ignore": f"INSERT OR IGNORE {_INTO}{_VALUES}",
    "insert or fail": f"INSERT OR FAIL {_INTO}{_VALUES}",
    "on conflict do nothing": f"INSERT {_INTO}{_VALUES} ON CONFLICT DO NOTHING",
    "upsert on position": f"INSERT {_INTO}{_VALUES} ON CONFLICT (position) DO UPDATE SET {_SET}",
    "insert or ignore, stream clash only": f"INSERT OR IGNORE {_INTO}{_MOVED}",
    "update or replace": "UPDATE OR REPLACE events SET payload = :payload, hash = :hash "
    "WHERE position = :position",
}
POSTGRES_CONFLICTS = {
    "upsert on position": f"INSERT {_INTO}{_VALUES} ON CONFLICT (position) DO UPDATE SET {_SET}",
    "upsert on constraint": (
        f"INSERT {_INTO}{_VALUES} ON CONFLICT ON CONSTRAINT pk_events DO UPDATE SET {_SET}"
    ),
    "stream clash only": f"INSERT {_INTO}{_MOVED}",
    "on conflict do nothing": f"INSERT {_INTO}{_VALUES} ON CONFLICT DO NOTHING",
    "merge update": (
        "MERGE INTO events e USING (SELECT CAST(:position AS bigint) AS p) s ON e.position = s.p "
        "WHEN MATCHED THEN UPDATE SET payload = :payload, hash = :hash"
    ),
    "merge delete": (
        "MERGE INTO events e USING (SELECT CAST(:position AS bigint) AS p) s ON e.position = s.p "
        "WHEN MATCHED THEN DELETE"
    ),
}
# PostgreSQL's DO NOTHING refuses nothing: it skips the row, and the log is unchanged.
_SILENT = {("postgresql", "on conflict do nothing")}


def _forged_copy(store: EventStore, position: int) -> dict[str, object]:
    """The lean row at ``position`` with another payload and a hash that is right for it."""
    from recorder.store.hashing import event_digest

    (row,) = (e for e in store.iter_events(position - 1, until=position))
    payload = b"data: forged\n\n"
    digest = event_digest(
        row.prev_hash, row.position, row.session_id, row.exchange_id, row.seq, row.kind.value,
        row.recorded_at_ns, row.offset_ns, row.sse_event, row.sse_type, row.sequence_number,
        row.response_id, row.meta_json, payload,
    )  # fmt: skip
    with store.engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT * FROM events WHERE position = :p"), {"p": position}
        ).one()
    return {
        **stored._asdict(),
        "codec": None,
        "item_key": None,
        "payload": payload,
        "hash": digest,
        "new_position": store.last_position() + 1,
    }


def _dump(store: EventStore) -> list[tuple[object, ...]]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM events ORDER BY position")]


CONFLICT_CASES = [pytest.param("sqlite", c, id=f"sqlite-{c}") for c in SQLITE_CONFLICTS] + [
    pytest.param("postgresql", c, id=f"postgres-{c}", marks=pytest.mark.postgres)
    for c in POSTGRES_CONFLICTS
]


def _open_backend(request: pytest.FixtureRequest, backend: str) -> EventStore:
    url = str(request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url"))
    migrate.upgrade(url)
    return EventStore.open(url)


@pytest.mark.parametrize(("backend", "clause"), CONFLICT_CASES)
def test_no_conflict_clause_replaces_an_event(
    request: pytest.FixtureRequest, backend: str, clause: str
) -> None:
    with _open_backend(request, backend) as store:
        _sid, _xid, batch = session_batch()
        store.append(batch)
        before = _dump(store)
        # The exchange's last SSE frame: it has a successor, and a stream place to clash on.
        params = _forged_copy(store, 6)
        statement = (SQLITE_CONFLICTS if backend == "sqlite" else POSTGRES_CONFLICTS)[clause]
        if (backend, clause) in _SILENT:
            with store.engine.begin() as conn:
                assert conn.execute(sa.text(statement), params).rowcount == 0
        else:
            with pytest.raises(sa.exc.DBAPIError, match="immutable"), store.engine.begin() as conn:
                conn.execute(sa.text(statement), params)
        assert _dump(store) == before
        assert store.verify().ok


def test_sqlite_refuses_a_replace_of_a_session_event(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    with EventStore.open(sqlite_url) as store:
        store.append(session_batch()[2])
        before = _dump(store)
        params = _forged_copy(store, 8)  # the session_close: a session-stream event
        with pytest.raises(sa.exc.DBAPIError, match="immutable"), store.engine.begin() as conn:
            conn.execute(sa.text(f"INSERT OR REPLACE {_INTO}{_MOVED}"), params)
        assert _dump(store) == before


@pytest.mark.postgres
def test_postgres_refuses_truncate(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    with EventStore.open(pg_url) as store:
        store.append(session_batch()[2])
        with pytest.raises(sa.exc.DBAPIError, match="immutable"), store.engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE events")
        assert store.last_position() == 8


def test_store_translates_trigger_errors(store: EventStore) -> None:
    from recorder.store.engine import translate_errors

    store.append(session_batch()[2])
    with pytest.raises(ImmutableLogError), translate_errors(store.url), store.engine.begin() as c:
        c.exec_driver_sql("DELETE FROM events")


def test_reads_page_through_by_position(store: EventStore) -> None:
    batches = [session_batch(f"s{i}", frames=5) for i in range(4)]
    for _, _, batch in batches:
        store.append(batch)
    total = store.last_position()
    everything = list(store.iter_events(page=3))
    assert [e.position for e in everything] == list(range(1, total + 1))
    assert [e.position for e in store.iter_events(after=10, until=20, page=4)] == list(
        range(11, 21)
    )
    sid, xid, batch = batches[2]
    assert [e.to_event().payload for e in store.session_events(sid)] == [e.payload for e in batch]
    exchange = store.exchange_events(xid)
    assert [e.seq for e in exchange] == list(range(len(exchange)))


def test_sessions_and_lookup(store: EventStore) -> None:
    sid1, _, b1 = session_batch("alpha")
    sid2, _, b2 = session_batch("alpha")
    sid3, xid3, b3 = session_batch("beta", frames=2)
    for b in (b1, b2, b3):
        store.append(b)
    found = store.sessions()
    assert [s.id for s in found] == [sid1, sid2, sid3]
    assert found[0].labels == {"team": "a"} and found[0].closed and found[0].exchanges == 1
    with pytest.raises(AmbiguousSession, match="2 sessions are named 'alpha'") as info:
        store.find_session("alpha")  # never a guess between two
    assert [sid for sid, _ in info.value.candidates] == [sid1, sid2]
    assert store.find_session("beta").id == sid3
    assert store.find_session(sid1).id == sid1
    assert store.find_session(sid3[:10]).id == sid3
    with pytest.raises(UnknownSession, match="nope"):
        store.find_session("nope")
    (x,) = store.exchanges(sid3)
    assert (x.id, x.method, x.status, x.outcome, x.sse_events) == (
        xid3,
        "POST",
        200,
        "completed",
        2,
    )


def test_concurrent_appends_keep_one_valid_chain(store: EventStore) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(5):
                store.append(session_batch(frames=4)[2])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = store.verify()
    assert report.ok, report.problems
    assert report.checked == 8 * 5 * 9
    assert report.head_position == 8 * 5 * 9


def test_verify_reports_open_exchanges(store: EventStore) -> None:
    _sid, xid, batch = session_batch()
    store.append(batch[:4])  # request, head, one frame: never ended
    report = store.verify()
    assert report.ok
    assert report.open_exchanges == [xid]


def test_blank_database_is_not_upgraded(db_url: str) -> None:
    if db_url.startswith("sqlite:///"):
        sqlite3.connect(db_url.removeprefix("sqlite:///")).close()  # an empty file
    with pytest.raises(NotUpgraded, match="codetape db upgrade"):
        EventStore.open(db_url)


def test_old_revision_is_not_upgraded(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001_event_log'")
    engine.dispose()
    with pytest.raises(NotUpgraded, match="0001_event_log"):
        EventStore.open(db_url)


def test_unreachable_databases_fail_with_one_line(tmp_path: object) -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot reach"):
        EventStore.open("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailable, match="no such database file"):
        EventStore.open("sqlite:////nonexistent-dir/x/y.db")
    with pytest.raises(DatabaseUnavailable, match="unsupported"):
        EventStore.open("mysql://x@y/z")


def test_a_ctrl_c_that_the_drivers_cleanup_masks_stays_a_ctrl_c() -> None:
    """Ctrl-C inside a PostgreSQL statement left the connection busy; the cleanup's own
    error ("can't change 'autocommit' now") was reported as a database error."""
    from sqlalchemy.exc import DBAPIError

    from recorder.store.engine import translate_errors

    with pytest.raises(KeyboardInterrupt), translate_errors("sqlite:///unused.db"):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            orig = Exception("can't change 'autocommit' now: connection in transaction status")
            raise DBAPIError("COPY events", None, orig) from None
    with pytest.raises(StoreError), translate_errors("sqlite:///unused.db"):
        raise DBAPIError("SELECT 1", None, Exception("some other failure"))

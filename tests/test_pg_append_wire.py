"""A PostgreSQL append's round trips: few, on a connection of its own, safe as before.

An append sends ``BEGIN``, the log's lock and the head read (from the last row
the store wrote on) as one message, then its ``COPY`` and ``COMMIT`` (see
:mod:`recorder.store.pgwire`). These tests count the round trips on the wire
(libpq's trace of the append's connection), and prove what the folding must
not lose: the head is read after the lock is granted even where the server's
default isolation level would have fixed the snapshot before, a head no
longer where the store saw it is still found, and a pooled connection the
server dropped while idle costs the append nothing.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore
from recorder.store.store import APPEND_LOCK

pytestmark = pytest.mark.postgres


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(False)


def _frames(sid: str, xid: str, first: int, count: int) -> list[Event]:
    return [
        Event(sid, EventKind.SSE, first + i, xid, payload=b'data: {"n":%d}\n\n' % i)
        for i in range(count)
    ]


def _opened(store: EventStore) -> tuple[str, str]:
    sid, xid = new_id(), new_id()
    store.append(
        [
            Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "wire"}),
            Event(sid, EventKind.REQUEST, 0, xid, payload=b"{}", meta={"method": "POST"}),
            Event(sid, EventKind.RESPONSE_HEAD, 1, xid, meta={"status": 200}),
        ]
    )
    return sid, xid


class _Trace:
    """libpq's trace of every connection the store's append engine checks out."""

    def __init__(self, store: EventStore, path: Path) -> None:
        self.path = path
        self._file = path.open("w")
        self._engine = store.write_engine
        sa.event.listen(self._engine, "checkout", self._on_checkout)

    def _on_checkout(self, dbapi_connection: Any, *_args: object) -> None:
        dbapi_connection.pgconn.trace(self._file.fileno())

    def stop(self) -> list[str]:
        sa.event.remove(self._engine, "checkout", self._on_checkout)
        with self._engine.connect() as conn:
            pgconn = conn.connection.dbapi_connection.pgconn  # type: ignore[union-attr]
            pgconn.untrace()
        self._file.close()
        return self.path.read_text().splitlines()


def _round_trips(lines: list[str]) -> int:
    """Each round trip ends when the server says it is ready, or ready for COPY data."""
    return sum(1 for line in lines if "\tReadyForQuery" in line or "\tCopyInResponse" in line)


@pytest.fixture
def store(pg_url: str) -> Iterator[EventStore]:
    with EventStore.open(pg_url, upgrade=True) as opened:
        yield opened


def test_an_append_with_known_keys_takes_four_round_trips(
    store: EventStore, tmp_path: Path
) -> None:
    sid, xid = _opened(store)
    store.append(_frames(sid, xid, 2, 10))  # every key of the batch below is known now
    trace = _Trace(store, tmp_path / "trace.txt")
    try:
        positions = store.append(_frames(sid, xid, 12, 10))
    finally:
        lines = trace.stop()
    assert len(positions) == 10
    # BEGIN + lock + head; COPY; its rows; COMMIT. No ping, no BEGIN alone.
    assert _round_trips(lines) == 4, "\n".join(lines)
    queries = [line for line in lines if "\tQuery\t" in line]
    # The lock asked for with patience (see pgwire), all in the one message.
    assert "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout" in queries[0]
    assert "ORDER BY position DESC LIMIT 1; SET LOCAL lock_timeout TO DEFAULT" in queries[0]
    assert store.verify().ok


def test_the_head_is_looked_for_from_the_last_row_the_store_wrote(
    pg_url: str, tmp_path: Path
) -> None:
    """Partitions before that row are pruned; another writer's later rows are still found."""
    with EventStore.open(pg_url, upgrade=True) as one, EventStore.open(pg_url) as other:
        sid, xid = _opened(one)
        assert one.append(_frames(sid, xid, 2, 3)) == [4, 5, 6]
        _opened(other)  # positions 7-9, written by the other store
        trace = _Trace(one, tmp_path / "trace.txt")
        try:
            assert one.append(_frames(sid, xid, 5, 2)) == [10, 11]
        finally:
            lines = trace.stop()
        first = next(line for line in lines if "\tQuery\t" in line)
        assert "WHERE position >= 6 ORDER BY position DESC" in first
        assert _round_trips(lines) == 4, "\n".join(lines)
        assert one.verify().ok


def test_a_head_no_longer_where_the_store_saw_it_is_found_in_the_whole_log(
    store: EventStore, tmp_path: Path
) -> None:
    # As after the database was restored from a backup older than this
    # store's last append: nothing at or after the position it remembers.
    sid, xid = _opened(store)
    store.append(_frames(sid, xid, 2, 1))  # every key of the batch below is known now
    store._pg.seen_position = 1_000
    trace = _Trace(store, tmp_path / "trace.txt")
    try:
        assert store.append(_frames(sid, xid, 3, 2)) == [5, 6]
    finally:
        lines = trace.stop()
    assert _round_trips(lines) == 5, "\n".join(lines)  # the whole-log read is one more
    assert store.verify().ok
    assert store.append(_frames(sid, xid, 5, 1)) == [7]


def test_a_new_key_costs_five_round_trips_more(store: EventStore, tmp_path: Path) -> None:
    sid, xid = _opened(store)
    store.append(_frames(sid, xid, 2, 1))
    trace = _Trace(store, tmp_path / "trace.txt")
    try:
        # A new response id: the one key to make.
        store.append([Event(sid, EventKind.SSE, 3, xid, payload=b"x", response_id="resp_new")])
    finally:
        lines = trace.stop()
    # BEGIN + key lock; the lookup; the next id; the insert; COMMIT: then the append's four.
    assert _round_trips(lines) == 5 + 4, "\n".join(lines)
    first = next(line for line in lines if "\tQuery\t" in line)
    assert "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout" in first
    assert "LOCK TABLE events IN ACCESS SHARE MODE; SET LOCAL lock_timeout TO DEFAULT" in first
    assert [e.response_id for e in store.exchange_events(xid)][-1] == "resp_new"


def test_the_head_is_read_after_the_lock_whatever_the_default_isolation(pg_url: str) -> None:
    """With REPEATABLE READ as the database's default, a snapshot taken when the
    lock was asked for would miss the append that held it: a position clash."""
    libpq = _libpq(pg_url)
    first = EventStore.open(pg_url, upgrade=True)
    database = sa.make_url(pg_url).database
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(
            f"ALTER DATABASE \"{database}\" SET default_transaction_isolation = 'repeatable read'"
        )
    second = EventStore.open(pg_url)
    try:
        sid, xid = _opened(first)
        waiting = threading.Event()
        release = threading.Event()
        errors: list[BaseException] = []

        def hold(conn: sa.Connection, batch: list[Event], last: int) -> tuple[list[Event], None]:
            # Holding the lock: let the other writer queue behind it, then commit.
            waiting.set()
            assert release.wait(30)
            return batch, None

        def append_first() -> None:
            try:
                first.append(_frames(sid, xid, 2, 3), prepare=hold)
            except BaseException as exc:
                errors.append(exc)

        def append_second() -> None:
            try:
                second.append(_frames(sid, new_id(), 0, 3))
            except BaseException as exc:
                errors.append(exc)

        one = threading.Thread(target=append_first)
        one.start()
        assert waiting.wait(30)
        two = threading.Thread(target=append_second)
        two.start()
        with psycopg.connect(libpq, autocommit=True) as watcher:
            for _ in range(3000):
                queued = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND ((classid::bigint << 32) | objid::bigint) = %s",
                    (APPEND_LOCK,),
                ).fetchone()
                if queued is not None and queued[0] == 1:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the second append never queued for the lock")
        release.set()
        one.join(30)
        two.join(30)
        assert errors == []
        assert first.last_position() == 9
        assert first.verify().ok
    finally:
        first.close()
        second.close()


def test_a_pooled_connection_the_server_dropped_costs_the_append_nothing(
    store: EventStore,
) -> None:
    sid, xid = _opened(store)
    with store.write_engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with psycopg.connect(_libpq(store.url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(500):
            row = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
            if row.fetchone() is None:
                break
            time.sleep(0.01)
    # The append's first round trip meets the dead connection, and goes again.
    assert store.append(_frames(sid, xid, 2, 2)) == [4, 5]
    assert store.verify().ok


def test_a_store_dropped_unclosed_closes_its_append_connections(store: EventStore) -> None:
    """A store made over another's engine, never closed: its own append engine is."""
    other = EventStore(store.engine, store.url)
    _opened(other)
    engine = other.write_engine
    assert engine.pool.checkedin() == 1
    del other
    gc.collect()
    assert engine.pool.checkedin() == 0  # disposed: closed, not left to the collector

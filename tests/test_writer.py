"""The background writer: group commit, order, flush and close semantics."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest
import sqlalchemy as sa

from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore, pgwire
from recorder.store.pgwire import LOCK_PATIENCE
from recorder.store.store import APPEND_LOCK
from recorder.writer import Writer


def frames(session_id: str, exchange_id: str, n: int) -> list[Event]:
    return [
        Event(session_id, EventKind.SSE, 2 + i, exchange_id, payload=f"data: {i}\n\n".encode())
        for i in range(n)
    ]


def test_group_commit_keeps_order_and_never_commits_per_event(store: EventStore) -> None:
    sid, xid = new_id(), new_id()
    writer = Writer(store)
    writer.submit(Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "w"}))
    writer.submit(Event(sid, EventKind.REQUEST, 0, xid, meta={"method": "POST", "url": "u"}))
    writer.submit(Event(sid, EventKind.RESPONSE_HEAD, 1, xid, meta={"status": 200}))
    for ev in frames(sid, xid, 3000):
        assert writer.submit(ev)
    assert writer.flush(30)
    stats = writer.stats
    assert stats.stored == 3003 and stats.lost == 0
    assert stats.commits * 10 < stats.stored  # batches, not one commit per event
    stored = store.exchange_events(xid)
    assert [e.seq for e in stored] == list(range(3002))
    assert [e.payload for e in stored[2:]] == [f"data: {i}\n\n".encode() for i in range(3000)]
    writer.close()
    assert not writer.submit(Event(sid, EventKind.SESSION_CLOSE, None))  # closed: dropped
    assert writer.stats.lost == 1


def test_close_drains_what_is_queued(store: EventStore) -> None:
    sid = new_id()
    writer = Writer(store, flush_interval=60.0)  # only close can make it write now
    writer.submit(Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "w"}))
    writer.submit(Event(sid, EventKind.SESSION_CLOSE, None))
    writer.close()
    assert [e.kind for e in store.session_events(sid)] == [
        EventKind.SESSION_OPEN,
        EventKind.SESSION_CLOSE,
    ]
    assert writer.flush(1)  # nothing pending


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["advisory", "table"])
def test_a_commit_waiting_for_another_transactions_lock_does_not_hold_the_producer(
    pg_url: str, how: str
) -> None:
    """Only ``max_pending_bytes`` may hold the producer while the log is locked elsewhere:
    not the loss window (``max_lag``), and not ``stall_after``, here longer than the test."""
    store = EventStore.open(pg_url, upgrade=True)
    libpq = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    holder = psycopg.connect(libpq)
    watcher = psycopg.connect(libpq, autocommit=True)
    writer = Writer(store, flush_interval=0.0, max_lag=0.0, stall_after=3600.0)
    try:
        if how == "advisory":
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        else:
            holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            waiting = (
                "SELECT count(*) FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted"
            )
        sid, xid = new_id(), new_id()
        writer.submit(Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "w"}))
        writer.submit(Event(sid, EventKind.REQUEST, 0, xid, meta={"method": "POST", "url": "u"}))
        deadline = time.monotonic() + 120  # a safety net for a broken run, not a speed limit
        while watcher.execute(waiting).fetchone() != (1,):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Once the server says the lock is held elsewhere, the producer has room
        # (and is told so), the wait counted from when the lock was asked for.
        while (since := store.lock_wait_since(writer_thread(writer))) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert time.monotonic() - since >= LOCK_PATIENCE
        for ev in frames(sid, xid, 100):
            assert writer.submit(ev)
        assert not writer.congested
        assert writer.wait_for_room(timeout=0)
        assert watcher.execute(waiting).fetchone() == (1,)  # still waiting for the lock
        holder.commit()
        assert writer.flush(120)
        assert writer.stats.stored == 102 and writer.stats.lost == 0
        assert [e.seq for e in store.exchange_events(xid)] == [0, *range(2, 102)]
    finally:
        holder.close()  # first: a failed run must not leave the writer waiting on its lock
        writer.close()
        watcher.close()
        store.close()


def writer_thread(writer: Writer) -> int | None:
    return writer._thread.ident if writer._thread else None


@pytest.mark.postgres
def test_a_commit_slowed_by_a_starved_server_still_holds_the_producer_to_the_loss_window(
    pg_url: str,
) -> None:
    """A slow round trip is not a lock wait: with the server's backends stopped
    (as a server short of CPU, only longer), the producer waits once its oldest
    event is ``max_lag`` old, so a kill loses no more than the window."""
    store = EventStore.open(pg_url, upgrade=True)
    libpq = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    watcher = psycopg.connect(libpq, autocommit=True)
    writer = Writer(store, flush_interval=0.0, max_lag=0.05, stall_after=3600.0)
    stopped: list[int] = []
    try:
        sid, xid = new_id(), new_id()
        writer.submit(Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "w"}))
        writer.submit(Event(sid, EventKind.REQUEST, 0, xid, meta={"method": "POST", "url": "u"}))
        assert writer.flush(120)  # keys made, the append's connection open and pooled
        backends = watcher.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchall()
        assert backends
        for (pid,) in backends:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        for ev in frames(sid, xid, 100):
            assert writer.submit(ev)
        # The commit now waits on a backend that does not run: well past the
        # window and the lock patience, nobody holds a lock.
        time.sleep(0.05 + 4 * LOCK_PATIENCE)
        assert writer.stats.stored == 2
        assert store.lock_wait_since(writer_thread(writer)) is None
        assert not writer.wait_for_room(timeout=0)
        assert writer.congested
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    try:
        assert writer.flush(120)
        assert writer.stats.stored == 102 and writer.stats.lost == 0
        assert [e.seq for e in store.exchange_events(xid)] == [0, *range(2, 102)]
    finally:
        writer.close()
        watcher.close()
        store.close()


@pytest.mark.postgres
def test_a_producer_held_back_goes_on_as_soon_as_the_server_says_the_lock_is_held(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer waiting for room (the loss window passed) is let go when the
    commit's lock wait is confirmed, not at its next look at the clock: here
    that look never comes (re-checks an hour apart)."""
    # The server answers "held" after 1 s here, so the producer is surely held back first.
    monkeypatch.setattr(pgwire, "_PATIENT", "SET LOCAL lock_timeout = '1s'")
    store = EventStore.open(pg_url, upgrade=True)
    libpq = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    holder = psycopg.connect(libpq)
    watcher = psycopg.connect(libpq, autocommit=True)
    writer = Writer(store, flush_interval=0.0, max_lag=0.0, stall_after=3600.0)
    writer._done.recheck = 3600.0
    released: list[bool] = []
    try:
        sid, xid = new_id(), new_id()
        writer.submit(Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "w"}))
        assert writer.flush(120)  # keys made: the next commit waits on the append's lock
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
        writer.submit(Event(sid, EventKind.REQUEST, 0, xid, meta={"method": "POST", "url": "u"}))
        waiter = threading.Thread(target=lambda: released.append(writer.wait_for_room(60)))
        waiter.start()
        deadline = time.monotonic() + 120  # a safety net for a broken run, not a speed limit
        while not writer.congested:  # past max_lag (0): the producer waits
            assert time.monotonic() < deadline and not released
            time.sleep(0.001)
        assert store.lock_wait_since(writer_thread(writer)) is None  # not confirmed yet
        waiter.join(30)
        assert released == [True]
        # Released while the other transaction still holds the lock and nothing
        # was committed. (The commit may be between its timed-out request and
        # the one that waits: not necessarily queued for the lock this instant.)
        held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        assert watcher.execute(held).fetchone() == (1,)
        assert writer.stats.stored == 1
        assert store.lock_wait_since(writer_thread(writer)) is not None
    finally:
        holder.close()
        writer.close()
        watcher.close()
        store.close()
    assert writer.stats.stored == 2 and writer.stats.lost == 0

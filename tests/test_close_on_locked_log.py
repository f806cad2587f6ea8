"""Closing a session while another transaction keeps the PostgreSQL log locked.

The close waits a bounded time; the events it could not store by then are
still on their way. The session's lease must outlive that wait, or a repair
could close the session first and the late events would clash with it.
"""

from __future__ import annotations

import time

import psycopg
import pytest
import sqlalchemy as sa

from recorder.capture.sink import SessionWriter
from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore, migrate


def _lease_holders(store: EventStore, session_id: str) -> list[str]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT holder FROM leases WHERE session_id = :s"), {"s": session_id}
        )
        return [r[0] for r in rows]


@pytest.mark.postgres
def test_a_close_that_runs_out_of_time_on_a_locked_log_keeps_the_lease_until_it_is_done(
    pg_url: str,
) -> None:
    migrate.upgrade(pg_url)
    libpq = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    with EventStore.open(pg_url) as store:
        sid, xid = new_id(), new_id()
        writer = SessionWriter(store, sid, flush_interval=0.0)
        holder = psycopg.connect(libpq)
        try:
            writer.submit(Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "late"}))
            assert writer.flush(60)
            assert _lease_holders(store, sid)  # taken with the session_open
            holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            writer.submit(Event(sid, EventKind.REQUEST, 0, xid, meta={"method": "POST"}))
            writer.submit(Event(sid, EventKind.SESSION_CLOSE, None))
            writer.close(timeout=0.2, session_closed=True)  # gives up waiting: still locked
            assert writer.running
            assert _lease_holders(store, sid), "lease released with the events still queued"
            holder.commit()
            deadline = time.monotonic() + 120  # a safety net for a broken run, not a limit
            while writer.running or _lease_holders(store, sid):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            holder.close()
        assert store.find_session(sid).closed
        [x] = store.exchanges(sid)
        assert x.id == xid
        report = store.verify()
        assert report.ok

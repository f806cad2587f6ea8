"""Catch-ups lock their checkpoint rows in one order, so two never deadlock (PostgreSQL).

A catch-up's write transaction locks the checkpoint rows of its projections
(``SELECT ... FOR UPDATE``) before it writes. Rows are locked in the order
the scan returns them, and an update moves a row elsewhere in the table, so
without an order two catch-ups could lock the same rows in opposite orders
and PostgreSQL would kill one of them ("deadlock detected"). They are locked
by name.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from recorder.projections import runner
from recorder.store.store import EventStore


@pytest.fixture
def store(pg_url: str) -> Iterator[EventStore]:
    with EventStore.open(pg_url, upgrade=True) as opened:
        yield opened


def _libpq(store: EventStore) -> str:
    return store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def test_checkpoint_rows_are_locked_in_name_order(store: EventStore) -> None:
    runner.catch_up(store)
    url = _libpq(store)
    with psycopg.connect(url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM pj_checkpoints ORDER BY name")]
        assert len(names) >= 3
        # Move every row but the last by name after it in the heap: a scan in
        # table order then meets the last name first.
        for name in names[:-1]:
            conn.execute("UPDATE pj_checkpoints SET updated_at_ns = updated_at_ns + 1 "
                         "WHERE name = %s", (name,))  # fmt: skip
    first, second, last = names[0], names[1], names[-1]
    query = runner._checkpoint_query(names).with_for_update()
    with psycopg.connect(url) as holder, psycopg.connect(url) as probe:
        holder.execute("SELECT 1 FROM pj_checkpoints WHERE name = %s FOR UPDATE", (second,))
        blocked = threading.Thread(target=lambda: _run_locking_query(store, query))
        blocked.start()
        try:
            _wait_until_waiting(probe)
            # In name order it holds the first row and waits on the second: the
            # last is free. In table order it would hold the last already.
            taken = _locked(probe, first), _locked(probe, last)
        finally:
            holder.rollback()
            blocked.join()
    assert taken == (True, False)


def _run_locking_query(store: EventStore, query: sa.Select[Any]) -> None:
    with store.engine.begin() as conn:
        conn.execute(query)


def _wait_until_waiting(probe: psycopg.Connection) -> None:
    for _ in range(10_000):
        waiting = probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%%FOR UPDATE%%' AND pid <> pg_backend_pid()"
        ).fetchone()
        probe.rollback()
        if waiting and waiting[0]:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the locking query never waited")


def _locked(probe: psycopg.Connection, name: str) -> bool:
    try:
        probe.execute("SELECT 1 FROM pj_checkpoints WHERE name = %s FOR UPDATE NOWAIT", (name,))
    except psycopg.errors.LockNotAvailable:
        probe.rollback()
        return True
    probe.rollback()
    return False

"""Migration 0008_pg_lean on PostgreSQL: a smaller row and key, every row and hash kept.

The log migrated here is the real Code Interpreter recording of the fixtures
plus a SYNTHETIC session (``synthetic_session``, named so), written by
:func:`old_log.old_log` into a log left at 0007 with 150-position partitions,
so that rows lie in two ranges and the default partition.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from old_log import old_log
from synthetic_session import synthetic_session

from recorder.errors import StoreError
from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore, migrate
from recorder.store.engine import create_engine
from recorder.store.partitions import DEFAULT_PARTITION, ensure_partitions, list_partitions
from recorder.store.revision import SCHEMA_REVISION
from recorder.tape import read_tape

pytestmark = pytest.mark.postgres

TAPE = (
    Path(__file__).resolve().parents[1]
    / "fixtures/realdata/openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
)
_TYPES = (
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
    "WHERE a.attrelid = '{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
    "ORDER BY a.attnum"
)


def _sql(url: str, statement: str) -> list[sa.Row[tuple[object, ...]]]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(statement)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def _log_at_0007(make_pg_url: Callable[[], str]) -> str:
    url = make_pg_url()
    migrate.upgrade(url, "0007_stream_check")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        ensure_partitions(conn, rows=150, ahead=2)
    engine.dispose()
    synthetic = synthetic_session(new_id(), 1_767_225_600 * 10**9, calls=2, deltas=5)
    old_log(make_pg_url(), url, [read_tape(TAPE), synthetic])
    return url


def _hashes_and_verify(url: str) -> list[tuple[int, str]]:
    # Not EventStore.open: that refuses a revision other than this code's.
    store = EventStore(create_engine(url), url)
    try:
        assert store.verify().ok
        return [(ev.position, ev.hash) for ev in store.iter_events()]
    finally:
        store.close()


def test_a_0007_log_upgrades_with_every_row_partition_and_grant_kept(
    make_pg_url: Callable[[], str],
) -> None:
    url = _log_at_0007(make_pg_url)
    reader = f"lean_reader_{new_id()[:12]}"  # roles are per server: one per test run
    _sql(url, f"CREATE ROLE {reader} NOLOGIN")
    _sql(url, f"GRANT SELECT ON events, event_rows TO {reader}")
    before = _hashes_and_verify(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        parts = list_partitions(conn)
    engine.dispose()
    assert [p.first for p in parts] == [1, 151, None]
    assert _sql(url, f"SELECT count(*) FROM {DEFAULT_PARTITION}")[0][0] > 0
    row_bytes = _sql(url, "SELECT sum(pg_column_size(e.*)) FROM events e")[0][0]

    migrate.upgrade(url)

    assert migrate.current_revision(url) == SCHEMA_REVISION
    assert _hashes_and_verify(url) == before
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert list_partitions(conn) == parts
    engine.dispose()
    types = dict(_sql(url, _TYPES.format(table="events_p000000000001")))
    assert types["sequence_number"] == "integer"
    assert types["sse_event_key"] == types["sse_type_key"] == "smallint"
    # Widest first, then variable length: no alignment padding in a row.
    widths = [
        {"bigint": 8, "integer": 4, "smallint": 2}.get(t, 0)
        for t in dict(_sql(url, _TYPES.format(table="events"))).values()
    ]
    assert widths == sorted(widths, reverse=True)
    # 8 bytes less per event whose three narrowed columns are set.
    narrowed = _sql(
        url,
        "SELECT count(*) FROM events WHERE sequence_number IS NOT NULL "
        "AND sse_event_key IS NOT NULL AND sse_type_key IS NOT NULL",
    )[0][0]
    after_bytes = _sql(url, "SELECT sum(pg_column_size(e.*)) FROM events e")[0][0]
    assert narrowed > 400
    assert after_bytes <= row_bytes - 8 * narrowed
    fill = _sql(
        url,
        "SELECT c.relname, c.reloptions FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = 'events_p000000000151'::regclass ORDER BY c.relname",
    )
    assert fill == [
        ("events_p000000000151_exchange_key_seq_idx", ["fillfactor=100"]),
        ("events_p000000000151_pkey", ["fillfactor=100"]),
        ("events_p000000000151_session_key_position_idx", ["fillfactor=100"]),
        ("events_p000000000151_session_key_seq_idx", None),
    ]
    assert (reader, "SELECT") in _sql(
        url,
        "SELECT a.grantee::regrole::text, a.privilege_type FROM pg_class c, "
        "aclexplode(c.relacl) a WHERE c.oid = 'event_rows'::regclass",
    )
    assert _sql(url, f"SELECT has_table_privilege('{reader}', 'events', 'SELECT')")[0][0]
    with pytest.raises(sa.exc.DBAPIError, match="immutable"):
        _sql(url, "DELETE FROM events WHERE position = 1")
    with pytest.raises(sa.exc.DBAPIError, match="immutable"):
        _sql(url, "TRUNCATE events_p000000000001")

    with EventStore.open(url) as store:
        sid = new_id()
        store.append(
            [
                Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "after"}),
                Event(sid, EventKind.SSE, 0, new_id(), sse_type="t", sequence_number=7),
            ]
        )
        with store.engine.begin() as conn:
            ensure_partitions(conn)  # the default partition's rows become a range
        assert store.verify().ok
        after = [(ev.position, ev.hash) for ev in store.iter_events()]
    assert after[: len(before)] == before

    migrate.downgrade(url, "0007_stream_check")
    assert _hashes_and_verify(url) == after
    types = dict(_sql(url, _TYPES.format(table="events")))
    assert types["sequence_number"] == "bigint"
    assert types["sse_event_key"] == "integer"
    _sql(url, f"DROP OWNED BY {reader}")
    _sql(url, f"DROP ROLE {reader}")


def test_a_value_too_wide_for_0008_stops_the_upgrade_with_nothing_changed(
    make_pg_url: Callable[[], str],
) -> None:
    url = _log_at_0007(make_pg_url)
    _sql(
        url,
        "INSERT INTO events (position, recorded_at_ns, sequence_number, session_key, seq, "
        "kind_key, hash_format_key, hash, payload) "
        "SELECT max(position) + 1, 0, 2147483648, 1, 999, 1, 1, '\\x00', '\\x00' FROM events",
    )
    count = _sql(url, "SELECT count(*) FROM events")[0][0]
    with pytest.raises(StoreError, match="sequence_number 2147483648"):
        migrate.upgrade(url)
    assert migrate.current_revision(url) == "0007_stream_check"
    assert _sql(url, "SELECT count(*) FROM events")[0][0] == count
    types = dict(_sql(url, _TYPES.format(table="events")))
    assert types["sequence_number"] == "bigint"

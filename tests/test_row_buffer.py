"""RowBuffer: what a batch writes is what reads back, on both backends; SQLite
inserts many rows per statement."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from recorder.errors import CodetapeError
from recorder.projections.row_buffer import RowBuffer
from recorder.projections.runner import write_connection
from recorder.store import EventStore
from recorder.store.engine import translate_errors
from recorder.store.schema import pj_ci_stages, pj_container_files

# 250 + 250 + 5 * 25 + 12: both part sizes and a remainder.
_COUNT = 637


def _file_rows(count: int, tag: str = "") -> list[tuple[Any, ...]]:
    # Column order of pj_container_files; NULLs, non-ASCII text and large ints included.
    return [
        (
            f"cntr_{i // 7:04d}",
            f"file-{i:05d}",
            None if i % 5 == 0 else f"résumé-{tag}{i}.csv",
            "assistant",
            None if i % 3 == 0 else i * 10**9,
            10_000 + i,
            None if i % 4 == 0 else f"x-{i}",
        )
        for i in range(count)
    ]


def _stored(store: EventStore, table: sa.Table) -> list[tuple[Any, ...]]:
    keys = list(table.primary_key.columns)
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(*keys))]


def test_rows_and_upserts_read_back_as_written(store: EventStore) -> None:
    rows = _file_rows(_COUNT)
    with write_connection(store) as conn, conn.begin():
        buffer = RowBuffer(pj_container_files, store.backend)
        for row in rows:
            buffer.add(row)
        buffer.flush(conn)
    assert _stored(store, pj_container_files) == sorted(rows)

    # A second batch replaces some rows by key and adds new ones.
    replaced = _file_rows(40, tag="new-")
    added = [("cntr_new", f"file-{i:05d}", None, "user", None, 20_000 + i, None) for i in range(30)]
    with write_connection(store) as conn, conn.begin():
        buffer = RowBuffer(pj_container_files, store.backend)
        for row in replaced:
            buffer.put(dict(zip(buffer.columns, row, strict=True)))
        for row in added:
            buffer.add(row)
        buffer.flush(conn)
    expected = sorted(replaced + rows[40:] + added)
    assert _stored(store, pj_container_files) == expected


def test_booleans_and_wide_rows_read_back(store: EventStore) -> None:
    # pj_ci_stages has 20 columns, among them a boolean.
    width = len(pj_ci_stages.columns)
    rows = [
        (
            f"x-{i}",
            f"ci_{i}",
            "s",
            None,
            None,
            i,
            "completed",
            i % 2 == 0,
            i,
            i,
            *([None] * (width - 13)),
            i,
            None,
            None,
        )
        for i in range(300)
    ]
    with write_connection(store) as conn, conn.begin():
        buffer = RowBuffer(pj_ci_stages, store.backend)
        for row in rows:
            buffer.add(row)
        buffer.flush(conn)
    stored = _stored(store, pj_ci_stages)
    assert [r[7] for r in stored] == [r[7] for r in sorted(rows)]
    assert [r[:7] + r[8:] for r in stored] == [r[:7] + r[8:] for r in sorted(rows)]


def test_sqlite_inserts_many_rows_per_statement(sqlite_url: str) -> None:
    # executemany steps once per row, and the driver gives up the GIL at every
    # step: a rebuild's read-ahead thread then takes it from the writer per row.
    from recorder.store import migrate

    migrate.upgrade(sqlite_url)
    with EventStore.open(sqlite_url) as store, write_connection(store) as conn:
        statements: list[str] = []
        raw: Any = conn.connection.dbapi_connection
        raw.set_trace_callback(statements.append)
        with conn.begin():
            buffer = RowBuffer(pj_container_files, store.backend)
            for row in _file_rows(_COUNT):
                buffer.add(row)
            buffer.flush(conn)
        raw.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT INTO pj_container_files")]
    # 2 statements of 250 rows, 5 of 25, and the 12 rows left one by one.
    assert len(inserts) == 2 + 5 + 12


def test_a_row_of_the_wrong_width_writes_nothing(store: EventStore) -> None:
    rows = _file_rows(300)
    # Two wrong rows whose widths add up to two right ones: each is still refused.
    rows[10] = rows[10][:-1]
    rows[11] = (*rows[11], "extra")
    refused = (CodetapeError, sa.exc.DBAPIError, psycopg.Error, ValueError)
    with (
        pytest.raises(refused),
        translate_errors(store.url),
        write_connection(store) as conn,
        conn.begin(),
    ):
        buffer = RowBuffer(pj_container_files, store.backend)
        for row in rows:
            buffer.add(row)
        buffer.flush(conn)
    assert _stored(store, pj_container_files) == []

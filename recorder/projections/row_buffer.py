"""The rows one batch of one projection writes to one table, written at once.

Guarantees: rows added (:meth:`RowBuffer.add`) and upserted by primary key
(:meth:`RowBuffer.put`, the last one per key wins and replaces any stored
row) are written by :meth:`RowBuffer.flush` on the caller's connection, in
the caller's transaction, so they commit or roll back with its checkpoint;
:meth:`RowBuffer.stored` reads rows as earlier batches wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table

__all__ = ["RowBuffer"]


class RowBuffer:
    """Rows one batch writes to one table: plain inserts, and upserts by primary key.

    Writes go through the driver's ``executemany`` with tuples in column order
    (on PostgreSQL, ``COPY``): a rebuild inserts about one row per event, so
    per-row overhead matters.
    """

    def __init__(self, table: Table, backend: str) -> None:
        self.table = table
        self.backend = backend
        self.columns = [c.name for c in table.columns]
        self.keys = [c.name for c in table.primary_key.columns]
        marker = self._marker = "?" if backend == "sqlite" else "%s"
        self._insert_sql = (
            f"INSERT INTO {table.name} ({', '.join(self.columns)}) "
            f"VALUES ({', '.join([marker] * len(self.columns))})"
        )
        self._delete_sql = f"DELETE FROM {table.name} WHERE " + " AND ".join(
            f"{k} = {marker}" for k in self.keys
        )
        self._copy_sql = f"COPY {table.name} ({', '.join(self.columns)}) FROM STDIN"
        self._select_head = f"SELECT {', '.join(self.columns)} FROM {table.name}"
        self._select_sql = f"{self._select_head} WHERE " + " AND ".join(
            f"{k} = {marker}" for k in self.keys
        )
        self._cursor: Any = None
        self.rows: list[tuple[Any, ...]] = []
        self.upserts: dict[tuple[Any, ...], dict[str, Any]] = {}

    def stored(self, conn: Connection, key: tuple[Any, ...]) -> dict[str, Any] | None:
        """The stored row with primary key ``key`` (as written by earlier batches), if any.

        Through one driver cursor, not a Core ``select``: projections look
        rows up per event, where SQLAlchemy's statement overhead would dominate.
        """
        if self._cursor is None:
            self._cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor = self._cursor
        cursor.execute(self._select_sql, key)
        # fetchall, not fetchone: a SQLite statement left unfinished keeps its read open.
        found = cursor.fetchall()
        return dict(zip(self.columns, found[0], strict=True)) if found else None

    def stored_where(
        self, conn: Connection, column: str, values: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """Every stored row whose ``column`` is one of ``values``, in one query per 500."""
        if self._cursor is None:
            self._cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor = self._cursor
        found: list[dict[str, Any]] = []
        for at in range(0, len(values), 500):
            chunk = list(values[at : at + 500])
            markers = ", ".join([self._marker] * len(chunk))
            cursor.execute(f"{self._select_head} WHERE {column} IN ({markers})", chunk)
            found.extend(dict(zip(self.columns, row, strict=True)) for row in cursor.fetchall())
        return found

    def add(self, row: tuple[Any, ...]) -> None:
        """A new row (its key was never written before), in column order."""
        self.rows.append(row)

    def put(self, row: dict[str, Any]) -> None:
        """A row that replaces any row with the same primary key."""
        self.upserts[tuple(row[k] for k in self.keys)] = row

    def flush(self, conn: Connection) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None
        if self.upserts:
            conn.exec_driver_sql(self._delete_sql, list(self.upserts))
            cols = self.columns
            self.rows.extend(tuple(r[c] for c in cols) for r in self.upserts.values())
        if self.rows and self.backend == "postgresql":
            # COPY streams the rows in one statement: several times faster than
            # executemany's INSERT per row, and the same rows (same adapters).
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                with cursor.copy(self._copy_sql) as copy:
                    for row in self.rows:
                        copy.write_row(row)
            finally:
                cursor.close()
        elif self.rows:
            conn.exec_driver_sql(self._insert_sql, self.rows)
        self.rows = []
        self.upserts = {}

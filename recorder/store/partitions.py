"""The log's partitions on PostgreSQL: ranges of positions, made ahead of the appends.

Guarantees:

* On PostgreSQL (from revision ``0006_partitions``) ``events`` is
  partitioned by range of ``position``: each partition ``events_pNNNNNNNNNNNN``
  holds the positions ``[first, end)``, and ``events_default`` every position
  no range covers. So an append never fails for want of a partition, and the
  append path needs no DDL (the recording role may not run any).
* :func:`ensure_partitions` (run by the migration, ``codetape db partitions``
  and ``codetape archive``, as the tables' owner) keeps ``ahead`` empty ranges
  above the log's head. Rows that landed in ``events_default`` meanwhile are
  not moved: that table is detached and attached back as the range of exactly
  its rows (no row is copied, updated or deleted), and a new empty default
  partition takes its place. Everything runs in the caller's transaction
  under the log's append lock, so no append sees a half-made partition.
* Every partition refuses UPDATE and DELETE (the row trigger on ``events`` is
  cloned onto it) and TRUNCATE (a trigger of its own: statement triggers are
  not cloned). Old partitions leave only through :mod:`recorder.archive`,
  which detaches and drops them, a right only the tables' owner holds.
* SQLite keeps one table: :func:`require_postgres` says so in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from recorder.errors import CodetapeError

__all__ = [
    "AHEAD",
    "DEFAULT_PARTITION",
    "MAX_POSITION",
    "PARTITION_ROWS",
    "Partition",
    "PartitionError",
    "check_plan",
    "create_partition",
    "ensure_partitions",
    "is_partition",
    "list_partitions",
    "partition_name",
    "require_postgres",
]

PARTITION_ROWS = 1_000_000
"""Positions per partition unless told otherwise: a partition is the unit that
can leave the database, and each is one more index to probe per appended row
(the stream-uniqueness trigger), so neither tiny nor huge."""
AHEAD = 2
"""Empty ranges kept above the head."""
DEFAULT_PARTITION = "events_default"

_SIZE_NOTE = "codetape: positions per partition: "
_SIZE = re.compile(re.escape(_SIZE_NOTE) + r"(\d+)")
_PARTITION_NAME = re.compile(r"events_p\d{12}")
_BOUNDS = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")
# The log's append lock (recorder.store.append_pg.APPEND_LOCK), spelled here so
# that the migration can take it without importing the store.
_APPEND_LOCK = int.from_bytes(b"codetape", "big")


class PartitionError(CodetapeError):
    """The log's partitions cannot be managed here (SQLite, or a right the role lacks)."""


MAX_POSITION = 2**63 - 1
"""The highest position a PostgreSQL log can hold (a bigint)."""


def check_plan(rows: int | None, ahead: int, head: int = 0) -> None:
    """Refuse a size and count of ranges above ``head`` that would pass :data:`MAX_POSITION`."""
    if rows is not None and rows < 1:
        raise PartitionError("a partition holds at least one position")
    if ahead < 0:
        raise PartitionError("a count of partitions ahead of the head is not negative")
    if head + (rows or 1) * (ahead + 1) > MAX_POSITION:
        raise PartitionError(
            f"{ahead} partition(s) of {rows or 1:,} positions ahead of position {head:,} would "
            f"pass the highest position a log holds ({MAX_POSITION:,})"
        )


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: positions ``[first, end)``; both None for the default partition."""

    name: str
    first: int | None
    end: int | None

    @property
    def is_default(self) -> bool:
        return self.first is None


def require_postgres(conn: sa.Connection, what: str) -> None:
    if conn.dialect.name != "postgresql":
        raise PartitionError(
            f"{what} is PostgreSQL-only: a SQLite log is one table in one file "
            "(keep old months by copying the file, or export sessions to tapes)"
        )


def partition_name(first: int) -> str:
    return f"events_p{first:012d}"


def is_partition(table: str) -> bool:
    """Whether ``table`` is named as one of the log's partitions."""
    return table == DEFAULT_PARTITION or _PARTITION_NAME.fullmatch(table) is not None


def list_partitions(conn: sa.Connection) -> list[Partition]:
    """The partitions of ``events``, ranges by position, the default one last."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"
    ).all()
    ranges, default = [], []
    for name, bound in rows:
        found = _BOUNDS.search(bound or "")
        if found is None:
            default.append(Partition(name, None, None))
        else:
            ranges.append(Partition(name, int(found.group(1)), int(found.group(2))))
    ranges.sort(key=lambda p: p.first or 0)
    return ranges + default


def _chosen_size(conn: sa.Connection) -> int:
    """The size last asked for (kept as the table's comment), else :data:`PARTITION_ROWS`.

    Not read off the ranges: the newest filled one may be the table a
    migration attached or a default partition absorbed, of any size.
    """
    note = conn.exec_driver_sql("SELECT obj_description('events'::regclass, 'pg_class')").scalar()
    found = _SIZE.fullmatch(note or "")
    return int(found.group(1)) if found else PARTITION_ROWS


def _no_truncate(name: str) -> str:
    return (
        f"CREATE TRIGGER partition_no_truncate BEFORE TRUNCATE ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_immutable()"
    )


def create_partition(conn: sa.Connection, first: int | None, end: int | None) -> Partition:
    """A new empty partition for ``[first, end)`` (both None: the default one)."""
    if first is None or end is None:
        name = DEFAULT_PARTITION
        conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF events DEFAULT")
    else:
        name = partition_name(first)
        conn.exec_driver_sql(
            f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ({first}) TO ({end})"
        )
    conn.exec_driver_sql(_no_truncate(name))
    return Partition(name, first, end)


def _absorb_default(conn: sa.Connection, start: int) -> None:
    """Turn the default partition's rows into the range they span, without moving one."""
    low, high = conn.exec_driver_sql(
        f"SELECT min(position), max(position) FROM {DEFAULT_PARTITION}"
    ).one()
    if low is None:
        return
    if low < start:
        raise PartitionError(
            f"{DEFAULT_PARTITION} holds position {low}, below the partitions' end {start}: "
            "a row was inserted out of order (run `codetape verify`)"
        )
    name = partition_name(start)
    conn.exec_driver_sql(f"ALTER TABLE events DETACH PARTITION {DEFAULT_PARTITION}")
    conn.exec_driver_sql(f"ALTER TABLE {DEFAULT_PARTITION} RENAME TO {name}")
    # A check constraint first, so that the attach finds its bound proven
    # rather than scanning the rows under the exclusive lock once more.
    conn.exec_driver_sql(
        f"ALTER TABLE {name} ADD CONSTRAINT {name}_bound "
        f"CHECK (position IS NOT NULL AND position >= {start} AND position < {high + 1})"
    )
    conn.exec_driver_sql(
        f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ({start}) TO ({high + 1})"
    )
    conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bound")
    create_partition(conn, None, None)


def ensure_partitions(
    conn: sa.Connection, *, rows: int | None = None, ahead: int = AHEAD
) -> list[Partition]:
    """Keep ``ahead`` empty ranges of ``rows`` positions above the head; return the partitions.

    ``rows`` None keeps the size last given (else :data:`PARTITION_ROWS`); a
    size given is kept for later calls and replaces the empty ranges of
    another size above the head (never one that holds a row). Runs in
    ``conn``'s transaction, under the append lock.
    """
    require_postgres(conn, "partitioning the log")
    check_plan(rows, ahead)
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_APPEND_LOCK})")
    head = int(conn.exec_driver_sql("SELECT coalesce(max(position), 0) FROM events").scalar_one())
    parts = list_partitions(conn)
    ranges = [p for p in parts if not p.is_default]
    check_plan(rows if rows is not None else _chosen_size(conn), ahead, head)
    if rows is None:
        rows = _chosen_size(conn)
    else:
        conn.exec_driver_sql(f"COMMENT ON TABLE events IS '{_SIZE_NOTE}{rows}'")
        # Re-plan: empty ranges wholly above the head give way to the new size.
        for part in reversed(ranges):
            assert part.first is not None and part.end is not None
            if part.first <= head or part.end - part.first == rows:
                break
            conn.exec_driver_sql(f"DROP TABLE {part.name}")
            ranges.pop()
    end = ranges[-1].end if ranges else 1
    assert end is not None
    if not any(p.is_default for p in parts):
        create_partition(conn, None, None)
    else:
        _absorb_default(conn, end)
        head_now = int(
            conn.exec_driver_sql("SELECT coalesce(max(position), 0) FROM events").scalar_one()
        )
        end = max(end, head_now + 1)
    while end <= head + rows * ahead:
        create_partition(conn, end, end + rows)
        end += rows
    return list_partitions(conn)

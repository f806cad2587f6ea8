"""On PostgreSQL, the log becomes a table partitioned by range of position; rows kept as they are.

Revision ID: 0006_partitions
Revises: 0005_lean_log
Create Date: 2026-12-02

Why by position, not by month: an append knows its positions (it assigns
them under the append lock) and they only grow, so a range is full once the
head has passed it and no later append can land in it; the primary key stays
``position`` alone (a partition key must be part of it, and a time column
would make ``(position, recorded_at_ns)`` the key and let two rows share a
position). Which months a range holds is read from its rows when archiving.

The existing table is not copied: it is renamed and attached as the first
partition, holding exactly the positions it has, so every row (and so every
hash) is the row it was. The indexes are made on the new parent and adopt
the old table's, the triggers move to the parent (the row trigger is cloned
onto every partition; TRUNCATE gets a trigger per partition, see
:mod:`recorder.store.partitions`), the view ``event_rows`` is made again over
the parent, and empty ranges are made ahead of the head with a default
partition behind them. The key tables ``sessions`` and ``exchanges`` get
``first_position``, which bounds the stream trigger's probes (see
``_NO_CLASH``). SQLite keeps its one table and gets only that column,
never filled.

The downgrade copies the rows still present back into one plain table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from recorder.store.partitions import (
    create_partition,
    ensure_partitions,
    list_partitions,
    partition_name,
)

revision: str = "0006_partitions"
down_revision: str | None = "0005_lean_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    "position bigint NOT NULL, recorded_at_ns bigint NOT NULL, offset_ns bigint, "
    "sequence_number bigint, session_key integer NOT NULL, exchange_key integer, "
    "seq integer NOT NULL, sse_event_key integer, sse_type_key integer, response_key integer, "
    "item_key integer, kind_key smallint NOT NULL, hash_format_key smallint NOT NULL, "
    "codec smallint, hash bytea NOT NULL, meta text, payload bytea NOT NULL"
)
_INDEXES = (
    ("ix_events_session_key_position", "(session_key, position)", ""),
    ("ix_events_exchange_key_seq", "(exchange_key, seq)", " WHERE exchange_key IS NOT NULL"),
    ("ix_events_session_key_seq", "(session_key, seq)", " WHERE exchange_key IS NULL"),
)
_TRIGGERS = (
    """CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
       FOR EACH ROW EXECUTE FUNCTION codetape_events_immutable()""",
    """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
       FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_immutable()""",
    """CREATE TRIGGER events_no_clash AFTER INSERT ON events
       REFERENCING NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_no_clash()""",
)
# The stream trigger of 0005 probed the stream index once per inserted row;
# on a partitioned table each probe opens every partition's index (PostgreSQL
# prunes by position only), so an append slowed with each partition. The key
# tables now keep, per stream, the head + 1 at the time its key was made: no
# event of the stream lies below it, so each probe is bounded there, and the
# bound, a PL/pgSQL variable, prunes the older partitions before they are
# opened. A key from before 0006 has no bound: its probe visits them all.
_FIRST_POSITION = """CREATE FUNCTION codetape_key_first_position() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.first_position := (SELECT coalesce(max(position), 0) + 1 FROM events);
  RETURN NEW;
END $$"""
_NO_CLASH = """CREATE OR REPLACE FUNCTION codetape_events_no_clash() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  r record;
  low bigint;
  found bigint;
BEGIN
  FOR r IN SELECT exchange_key, session_key, seq FROM new_rows LOOP
    IF r.exchange_key IS NOT NULL THEN
      low := coalesce((SELECT first_position FROM exchanges WHERE id = r.exchange_key), 1);
      SELECT count(*) INTO found FROM events e
        WHERE e.exchange_key = r.exchange_key AND e.seq = r.seq AND e.position >= low;
    ELSE
      low := coalesce((SELECT first_position FROM sessions WHERE id = r.session_key), 1);
      SELECT count(*) INTO found FROM events e
        WHERE e.session_key = r.session_key AND e.seq = r.seq AND e.exchange_key IS NULL
          AND e.position >= low;
    END IF;
    -- The row itself is in events already, so a clash counts two.
    IF found > 1 THEN
      RAISE EXCEPTION 'codetape events are immutable: INSERT over an existing event refused'
        USING ERRCODE = 'unique_violation';
    END IF;
  END LOOP;
  RETURN NULL;
END $$"""
# 0005's, for the downgrade.
_NO_CLASH_0005 = """CREATE OR REPLACE FUNCTION codetape_events_no_clash() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM new_rows n WHERE n.exchange_key IS NOT NULL AND (
      SELECT count(*) FROM events e
      WHERE e.exchange_key = n.exchange_key AND e.seq = n.seq) > 1
  ) OR EXISTS (
    SELECT 1 FROM new_rows n WHERE n.exchange_key IS NULL AND (
      SELECT count(*) FROM events e
      WHERE e.session_key = n.session_key AND e.seq = n.seq AND e.exchange_key IS NULL) > 1
  ) THEN
    RAISE EXCEPTION 'codetape events are immutable: INSERT over an existing event refused'
      USING ERRCODE = 'unique_violation';
  END IF;
  RETURN NULL;
END $$"""
_TRIGGER_NAMES = ("events_no_update_delete", "events_no_truncate", "events_no_clash")


def _view() -> str:
    # The view of 0005, unchanged: it must be made again because a view
    # follows the table it was made over through a rename.
    genesis = "0" * 64
    return f"""CREATE VIEW event_rows AS SELECT
  e.position AS position, s.public_id AS session_id, x.public_id AS exchange_id,
  e.seq AS seq, k.public_id AS kind, e.recorded_at_ns AS recorded_at_ns,
  e.offset_ns AS offset_ns, se.public_id AS sse_event, st.public_id AS sse_type,
  e.sequence_number AS sequence_number, r.public_id AS response_id, it.public_id AS item_id,
  coalesce(e.meta, '{{}}') AS meta, e.codec AS codec, e.payload AS stored_payload,
  hf.public_id AS hash_format,
  CASE WHEN e.position = 1 THEN '{genesis}'
       ELSE (SELECT encode(p.hash, 'hex') FROM events p WHERE p.position = e.position - 1)
  END AS prev_hash,
  encode(e.hash, 'hex') AS hash
FROM events e
LEFT JOIN sessions s ON s.id = e.session_key
LEFT JOIN exchanges x ON x.id = e.exchange_key
LEFT JOIN names k ON k.id = e.kind_key
LEFT JOIN names se ON se.id = e.sse_event_key
LEFT JOIN names st ON st.id = e.sse_type_key
LEFT JOIN responses r ON r.id = e.response_key
LEFT JOIN items it ON it.id = e.item_key
LEFT JOIN names hf ON hf.id = e.hash_format_key"""


def _unhook(table: str) -> None:
    op.execute("DROP VIEW event_rows")
    for name in _TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")


def _hook() -> None:
    for statement in _TRIGGERS:
        op.execute(statement)
    op.execute(_view())


def upgrade() -> None:
    conn = op.get_bind()
    for table in ("sessions", "exchanges"):
        op.add_column(table, sa.Column("first_position", sa.BigInteger(), nullable=True))
    if conn.dialect.name != "postgresql":
        return  # SQLite keeps one table, and checks a stream per row by its own index
    op.execute(_FIRST_POSITION)
    for table in ("sessions", "exchanges"):
        op.execute(
            f"CREATE TRIGGER {table}_first_position BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION codetape_key_first_position()"
        )
    op.execute(_NO_CLASH)
    _unhook("events")
    low, high = conn.exec_driver_sql("SELECT min(position), max(position) FROM events").one()
    first = partition_name(int(low) if low is not None else 1)
    op.execute(f"ALTER TABLE events RENAME TO {first}")
    op.execute(f"ALTER TABLE {first} RENAME CONSTRAINT pk_events TO {first}_pkey")
    for index, _, _ in _INDEXES:
        op.execute(f"ALTER INDEX {index} RENAME TO {first}_{index.removeprefix('ix_events_')}")
    op.execute(f"CREATE TABLE events ({_COLUMNS}) PARTITION BY RANGE (position)")
    op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (position)")
    for index, columns, where in _INDEXES:
        # Made on the parent, each adopts the old table's equal index once attached.
        op.execute(f"CREATE INDEX {index} ON events {columns}{where}")
    if low is None:
        op.execute(f"DROP TABLE {first}")
    else:
        bound = f"{first}_bound"
        op.execute(
            f"ALTER TABLE {first} ADD CONSTRAINT {bound} "
            f"CHECK (position IS NOT NULL AND position >= {low} AND position < {high + 1})"
        )
        op.execute(
            f"ALTER TABLE events ATTACH PARTITION {first} FOR VALUES FROM ({low}) TO ({high + 1})"
        )
        op.execute(f"ALTER TABLE {first} DROP CONSTRAINT {bound}")
        op.execute(
            f"CREATE TRIGGER partition_no_truncate BEFORE TRUNCATE ON {first} "
            "FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_immutable()"
        )
    create_partition(conn, None, None)
    _hook()
    ensure_partitions(conn)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        for table in ("sessions", "exchanges"):
            op.drop_column(table, "first_position")
        return
    for table in ("sessions", "exchanges"):
        op.execute(f"DROP TRIGGER {table}_first_position ON {table}")
        op.drop_column(table, "first_position")
    op.execute("DROP FUNCTION codetape_key_first_position()")
    op.execute(_NO_CLASH_0005)
    parts = list_partitions(conn)
    _unhook("events")
    op.execute("ALTER TABLE events RENAME TO events_0006")
    op.execute("ALTER TABLE events_0006 RENAME CONSTRAINT pk_events TO pk_events_0006")
    for index, _, _ in _INDEXES:
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_0006")
    op.execute(f"CREATE TABLE events ({_COLUMNS}, CONSTRAINT pk_events PRIMARY KEY (position))")
    op.execute("INSERT INTO events SELECT * FROM events_0006 ORDER BY position")
    for part in parts:
        op.execute(f"ALTER TABLE events_0006 DETACH PARTITION {part.name}")
        op.execute(f"DROP TABLE {part.name}")
    op.execute("DROP TABLE events_0006")
    for index, columns, where in _INDEXES:
        op.execute(f"CREATE INDEX {index} ON events {columns}{where}")
    _hook()

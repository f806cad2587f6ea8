"""PostgreSQL's row and primary key made smaller; every row, hash and partition kept.

Revision ID: 0008_pg_lean
Revises: 0007_stream_check
Create Date: 2026-12-02

On PostgreSQL the lean row of 0005 still paid for widths its values never
use. This revision narrows three columns and rebuilds ``events`` in the
order that leaves no alignment padding (8-byte columns, then 4, then 2,
then variable length):

* ``sequence_number`` bigint -> integer. It is the SSE frame's position
  within one response (the API counts from 0), so up to 2,147,483,647
  frames per response; a larger value is refused on append with an error
  naming the column, as a bigint overflow was before.
* ``sse_event_key`` and ``sse_type_key`` integer -> smallint. They are keys
  into ``names``, whose ids are dense (1, 2, ...) and already capped at
  32,767 by ``kind_key`` and ``hash_format_key``, smallints since 0005, that
  point into the same table: the log may hold at most 32,767 distinct kinds,
  SSE event names, SSE types and hash formats together.

The primary key on ``position`` and the two indexes every event has an
entry in, ``(session_key, position)`` and ``(exchange_key, seq)``, are built
with fillfactor 100. Btree uses the fillfactor only when it splits the
rightmost leaf, i.e. when the key is the highest yet: every position is, and
so is every entry of the newest session and exchange (keys are handed out in
increasing order, and positions and seqs grow within a stream). The 10% kept
free there would only serve an older stream whose entries border that
leaf's, which then splits that leaf in halves, as it would anyway a little
later. The rows an upgrade copies are indexed after the copy, so their
leaves are packed full.

The rows are copied (in position order, values unchanged, so every hash
holds) into a new partitioned table with the same partitions (names and
ranges), indexes, triggers, the view ``event_rows``, the partition size and
the privileges granted on ``events`` and ``event_rows``. The upgrade takes
time and free space in proportion to the log; it fails, changing nothing,
when a stored value does not fit its narrower column. SQLite is untouched:
its integers take the bytes their values need whatever the declared type.

The downgrade copies the rows back into 0007's layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from recorder.errors import StoreError
from recorder.store.partitions import create_partition, list_partitions

revision: str = "0008_pg_lean"
down_revision: str | None = "0007_stream_check"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEAN = (
    "position bigint NOT NULL, recorded_at_ns bigint NOT NULL, offset_ns bigint, "
    "sequence_number integer, session_key integer NOT NULL, exchange_key integer, "
    "seq integer NOT NULL, response_key integer, item_key integer, "
    "sse_event_key smallint, sse_type_key smallint, kind_key smallint NOT NULL, "
    "hash_format_key smallint NOT NULL, codec smallint, "
    "hash bytea NOT NULL, meta text, payload bytea NOT NULL"
)
_PACKED = " WITH (fillfactor = 100)"
# 0006's (and 0007's) layout, for the downgrade.
_0007 = (
    "position bigint NOT NULL, recorded_at_ns bigint NOT NULL, offset_ns bigint, "
    "sequence_number bigint, session_key integer NOT NULL, exchange_key integer, "
    "seq integer NOT NULL, sse_event_key integer, sse_type_key integer, response_key integer, "
    "item_key integer, kind_key smallint NOT NULL, hash_format_key smallint NOT NULL, "
    "codec smallint, hash bytea NOT NULL, meta text, payload bytea NOT NULL"
)
_COLUMN_NAMES = (
    "position, recorded_at_ns, offset_ns, sequence_number, session_key, exchange_key, seq, "
    "response_key, item_key, sse_event_key, sse_type_key, kind_key, hash_format_key, codec, "
    "hash, meta, payload"
)
_INDEXES = (
    ("ix_events_session_key_position", "(session_key, position)", ""),
    ("ix_events_exchange_key_seq", "(exchange_key, seq)", " WHERE exchange_key IS NOT NULL"),
    ("ix_events_session_key_seq", "(session_key, seq)", " WHERE exchange_key IS NULL"),
)
# Which of _INDEXES (and the primary key) 0008 packs: the session-level one
# holds two entries a session, its close far from the rightmost leaf.
_PACKED_INDEXES = ("pk_events", "ix_events_session_key_position", "ix_events_exchange_key_seq")
_TRIGGERS = (
    """CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
       FOR EACH ROW EXECUTE FUNCTION codetape_events_immutable()""",
    """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
       FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_immutable()""",
    """CREATE TRIGGER events_no_clash AFTER INSERT ON events
       REFERENCING NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_no_clash()""",
)
_TRIGGER_NAMES = ("events_no_update_delete", "events_no_truncate", "events_no_clash")
_SMALLINT = 32_767
_INTEGER = 2_147_483_647


def _view() -> str:
    # 0006's view, unchanged: made again because it follows its table.
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


def _check_fits(conn: sa.Connection) -> None:
    """Refuse, before anything changes, a log whose values exceed the narrower columns.

    A :class:`StoreError`, so ``codetape db upgrade`` says it in one line.
    """
    high, low, names = conn.exec_driver_sql(
        "SELECT max(sequence_number), min(sequence_number), "
        "greatest(max(sse_event_key), max(sse_type_key)) FROM events"
    ).one()
    if (high is not None and high > _INTEGER) or (low is not None and low < -_INTEGER - 1):
        bad = high if high is not None and high > _INTEGER else low
        raise StoreError(
            f"an event has sequence_number {bad}, beyond the integer column of 0008_pg_lean: "
            "keep this log at 0007_stream_check"
        )
    if names is not None and names > _SMALLINT:
        raise StoreError(
            f"the log refers to name key {names}, beyond the smallint columns of 0008_pg_lean: "
            "keep this log at 0007_stream_check"
        )


def _grants(conn: sa.Connection, table: str) -> list[str]:
    """``GRANT`` statements for the privileges others than its owner hold on ``table``."""
    rows = conn.exec_driver_sql(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, "
        "a.privilege_type, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a "
        f"WHERE c.oid = '{table}'::regclass AND a.grantee <> c.relowner"
    ).all()
    return [
        f"GRANT {privilege} ON {table} TO {grantee}" + (" WITH GRANT OPTION" if option else "")
        for grantee, privilege, option in rows
    ]


def _rebuild(conn: sa.Connection, columns: str, packed: Sequence[str]) -> None:
    """``events`` made again with ``columns``: same partitions, rows, hooks and grants.

    The indexes named in ``packed`` are built with fillfactor 100.
    """
    parts = list_partitions(conn)
    note = conn.exec_driver_sql("SELECT obj_description('events'::regclass, 'pg_class')").scalar()
    grants = _grants(conn, "events") + _grants(conn, "event_rows")
    op.execute("DROP VIEW event_rows")
    for name in _TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER {name} ON events")
    # Dropped on the parent, so gone from every partition: the new ones take their names.
    op.execute("ALTER TABLE events DROP CONSTRAINT pk_events")
    for index, _, _ in _INDEXES:
        op.execute(f"DROP INDEX {index}")
    op.execute("ALTER TABLE events RENAME TO events_old")
    for part in parts:
        op.execute(f"ALTER TABLE {part.name} RENAME TO {part.name}_old")
    op.execute(f"CREATE TABLE events ({columns}) PARTITION BY RANGE (position)")
    for part in parts:
        create_partition(conn, part.first, part.end)
    # Position order, so each partition's heap is in the order the log is read.
    op.execute(
        f"INSERT INTO events ({_COLUMN_NAMES}) "
        f"SELECT {_COLUMN_NAMES} FROM events_old ORDER BY position"
    )
    op.execute("DROP TABLE events_old")  # and its partitions
    # The indexes after the rows: each built once, its leaves packed.
    pk_options = _PACKED if "pk_events" in packed else ""
    op.execute(f"ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (position){pk_options}")
    for index, cols, where in _INDEXES:
        options = _PACKED if index in packed else ""
        op.execute(f"CREATE INDEX {index} ON events {cols}{options}{where}")
    for statement in _TRIGGERS:
        op.execute(statement)
    op.execute(_view())
    if note is not None:
        quoted = note.replace("'", "''")
        op.execute(f"COMMENT ON TABLE events IS '{quoted}'")
    for statement in grants:
        op.execute(statement)


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    _check_fits(conn)
    _rebuild(conn, _LEAN, _PACKED_INDEXES)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    _rebuild(conn, _0007, ())

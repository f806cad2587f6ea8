"""The lean row: integer keys, binary hashes, compressed payloads; old rows kept verifiable.

Revision ID: 0005_lean_log
Revises: 0004_no_replace
Create Date: 2026-12-02

The wide ``events`` table of 0001 repeated on every row what its session,
exchange and predecessor already hold (32-hex ids, the kind, SSE names and
response id as text, ``{}`` for empty meta, the previous row's hash, hashes
as hex). This revision moves every row into the lean ``events`` described in
:mod:`recorder.store.schema`: public values once in the key tables, the hash
as 32 bytes, meta NULL when empty, a frame's output item id cut out into
``items``, the payload compressed against the
shipped dictionary when that pays (else an SSE frame without the ``event:``
line its row's ``sse_event`` holds). The hash rule does not change (it covers
the public values and the uncompressed payload), so every migrated row keeps
its hash and ``codetape verify`` passes after the upgrade exactly when it
passed before; the view ``event_rows`` shows the rows as they were.

Stream uniqueness, formerly two unique indexes, is an insert trigger on both
backends (on SQLite the no-replace trigger of 0004 already did that work),
so that on PostgreSQL the table keeps only its primary key on ``position``:
a range partitioning by position stays possible. Every new table is
append-only: triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL),
and on SQLite any INSERT that would replace a row.

The downgrade rebuilds the wide table from the view (payloads decompressed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from recorder.store import codec
from recorder.store.keys import Keys

revision: str = "0005_lean_log"
down_revision: str | None = "0004_no_replace"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY_TABLES = ("sessions", "exchanges", "responses", "items", "names")
_APPEND_ONLY = ("events", *_KEY_TABLES)
_PAGE = 5000
_WIDE = (
    "position", "session_id", "exchange_id", "seq", "kind", "recorded_at_ns", "offset_ns",
    "sse_event", "sse_type", "sequence_number", "response_id", "meta", "payload",
    "hash_format", "prev_hash", "hash",
)  # fmt: skip
_LEAN = (
    "position", "session_key", "exchange_key", "seq", "kind_key", "recorded_at_ns", "offset_ns",
    "sse_event_key", "sse_type_key", "sequence_number", "response_key", "item_key", "meta",
    "codec", "payload", "hash_format_key", "hash",
)  # fmt: skip

_IMMUTABLE = "codetape events are immutable"
# A statement trigger over the inserted rows: measured cheaper than a row
# trigger on the store's pipelined inserts, and set-based for a multi-row
# INSERT. Transition tables are allowed on a partitioned table's parent, so
# this survives a partitioning by position.
_NO_CLASH = """CREATE FUNCTION codetape_events_no_clash() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- One index probe per inserted row (a join could hash the whole log);
  -- the row itself is in events already, so a clash counts two.
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


def _sqlite_triggers(table: str) -> list[str]:
    if table == "events":
        clash = """EXISTS (SELECT 1 FROM events WHERE position = NEW.position)
  OR (NEW.exchange_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM events WHERE exchange_key = NEW.exchange_key AND seq = NEW.seq))
  OR (NEW.exchange_key IS NULL AND EXISTS (
        SELECT 1 FROM events
        WHERE session_key = NEW.session_key AND seq = NEW.seq AND exchange_key IS NULL))"""
    else:
        clash = (
            f"EXISTS (SELECT 1 FROM {table} WHERE id = NEW.id) "
            f"OR EXISTS (SELECT 1 FROM {table} WHERE public_id = NEW.public_id)"
        )
    return [
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
       BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}: UPDATE refused'); END""",
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
       BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}: DELETE refused'); END""",
        f"""CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} WHEN {clash}
       BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}: INSERT over an existing event refused'); END""",
    ]


def _pg_triggers(table: str) -> list[str]:
    statements = [
        f"""CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table}
       FOR EACH ROW EXECUTE FUNCTION codetape_events_immutable()""",
        f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
       FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_immutable()""",
    ]
    if table == "events":
        statements.append(
            """CREATE TRIGGER events_no_clash AFTER INSERT ON events
       REFERENCING NEW TABLE AS new_rows
       FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_no_clash()"""
        )
    return statements


def _view(dialect: str) -> str:
    if dialect == "postgresql":
        hex_hash, prev = "encode(e.hash, 'hex')", "encode(p.hash, 'hex')"
    else:
        hex_hash, prev = "lower(hex(e.hash))", "lower(hex(p.hash))"
    genesis = "0" * 64
    return f"""CREATE VIEW event_rows AS SELECT
  e.position AS position, s.public_id AS session_id, x.public_id AS exchange_id,
  e.seq AS seq, k.public_id AS kind, e.recorded_at_ns AS recorded_at_ns,
  e.offset_ns AS offset_ns, se.public_id AS sse_event, st.public_id AS sse_type,
  e.sequence_number AS sequence_number, r.public_id AS response_id, it.public_id AS item_id,
  coalesce(e.meta, '{{}}') AS meta, e.codec AS codec, e.payload AS stored_payload,
  hf.public_id AS hash_format,
  CASE WHEN e.position = 1 THEN '{genesis}'
       ELSE (SELECT {prev} FROM events p WHERE p.position = e.position - 1) END AS prev_hash,
  {hex_hash} AS hash
FROM events e
LEFT JOIN sessions s ON s.id = e.session_key
LEFT JOIN exchanges x ON x.id = e.exchange_key
LEFT JOIN names k ON k.id = e.kind_key
LEFT JOIN names se ON se.id = e.sse_event_key
LEFT JOIN names st ON st.id = e.sse_type_key
LEFT JOIN responses r ON r.id = e.response_key
LEFT JOIN items it ON it.id = e.item_key
LEFT JOIN names hf ON hf.id = e.hash_format_key"""


def _create_lean(dialect: str) -> None:
    position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    for table in _KEY_TABLES:
        extra = [sa.Column("session_key", sa.Integer(), nullable=False)]
        length = 200 if table in ("responses", "items", "names") else 64
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("public_id", sa.String(length), nullable=False),
            *(extra if table == "exchanges" else []),
            sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
            sa.UniqueConstraint("public_id", name=f"uq_{table}_public_id"),
        )
    # Widest first: no alignment padding in a PostgreSQL row.
    op.create_table(
        "events",
        sa.Column("position", position, autoincrement=False, nullable=False),
        sa.Column("recorded_at_ns", sa.BigInteger(), nullable=False),
        sa.Column("offset_ns", sa.BigInteger(), nullable=True),
        sa.Column("sequence_number", sa.BigInteger(), nullable=True),
        sa.Column("session_key", sa.Integer(), nullable=False),
        sa.Column("exchange_key", sa.Integer(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sse_event_key", sa.Integer(), nullable=True),
        sa.Column("sse_type_key", sa.Integer(), nullable=True),
        sa.Column("response_key", sa.Integer(), nullable=True),
        sa.Column("item_key", sa.Integer(), nullable=True),
        sa.Column("kind_key", sa.SmallInteger(), nullable=False),
        sa.Column("hash_format_key", sa.SmallInteger(), nullable=False),
        sa.Column("codec", sa.SmallInteger(), nullable=True),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("meta", sa.Text(), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_events"),
    )


def _lean_indexes() -> None:
    op.create_index("ix_events_session_key_position", "events", ["session_key", "position"])
    with_x, without_x = sa.text("exchange_key IS NOT NULL"), sa.text("exchange_key IS NULL")
    op.create_index(
        "ix_events_exchange_key_seq",
        "events",
        ["exchange_key", "seq"],
        sqlite_where=with_x,
        postgresql_where=with_x,
    )
    op.create_index(
        "ix_events_session_key_seq",
        "events",
        ["session_key", "seq"],
        sqlite_where=without_x,
        postgresql_where=without_x,
    )


def _copy_to_lean(conn: sa.Connection, source: str) -> None:
    """Every row of the wide table ``source``, in position order, into the lean tables."""
    keys = Keys()
    keys.begin()
    marker = "?" if conn.dialect.name == "sqlite" else "%s"
    insert = f"INSERT INTO events ({', '.join(_LEAN)}) VALUES ({', '.join([marker] * 17)})"
    select = sa.text(
        f"SELECT {', '.join(_WIDE)} FROM {source} WHERE position > :after "
        "ORDER BY position LIMIT :limit"
    )
    after = 0
    while True:
        rows = conn.execute(select, {"after": after, "limit": _PAGE}).all()
        if not rows:
            return
        lean: list[tuple[Any, ...]] = []
        for r in rows:
            (position, sid, xid, seq, kind, at, offset, sse_event, sse_type, number, rid, meta,
             payload, hash_format, _prev, digest) = r  # fmt: skip
            session_key = keys.key(conn, "sessions", sid)
            stored_codec, stored, item = codec.encode(bytes(payload), sse_event=sse_event)
            lean.append(
                (
                    position,
                    session_key,
                    None if xid is None else keys.key(conn, "exchanges", xid, session_key),
                    seq,
                    keys.key(conn, "names", kind),
                    at,
                    offset,
                    None if sse_event is None else keys.key(conn, "names", sse_event),
                    None if sse_type is None else keys.key(conn, "names", sse_type),
                    number,
                    None if rid is None else keys.key(conn, "responses", rid),
                    None if item is None else keys.key(conn, "items", item),
                    None if meta == "{}" else meta,
                    stored_codec,
                    stored,
                    keys.key(conn, "names", hash_format),
                    _hash_bytes(position, digest),
                )
            )
        conn.exec_driver_sql(insert, lean)
        after = rows[-1][0]


def _hash_bytes(position: int, digest: str) -> bytes:
    try:
        value = bytes.fromhex(digest)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise RuntimeError(
            f"the event at position {position} has a malformed hash {digest!r}: "
            "run `codetape verify` with the previous codetape"
        )
    return value


def _drop_triggers(dialect: str, tables: Sequence[str], names: Sequence[str]) -> None:
    for table in tables:
        for name in names:
            if dialect == "postgresql":
                op.execute(f"DROP TRIGGER IF EXISTS {table}_{name} ON {table}")
            else:
                op.execute(f"DROP TRIGGER IF EXISTS {table}_{name}")


def upgrade() -> None:
    conn = op.get_bind()
    dialect = conn.dialect.name
    # Out of the way first, so that the lean tables get the canonical names.
    _drop_triggers(
        dialect,
        ["events"],
        ["no_update", "no_delete", "no_replace", "no_update_delete", "no_truncate"],
    )
    op.rename_table("events", "events_0004")
    if dialect == "postgresql":
        op.execute("ALTER TABLE events_0004 RENAME CONSTRAINT pk_events TO pk_events_0004")
    _create_lean(dialect)
    _copy_to_lean(conn, "events_0004")
    op.drop_table("events_0004")
    _lean_indexes()
    if dialect == "postgresql":
        op.execute(_NO_CLASH)
    triggers = _pg_triggers if dialect == "postgresql" else _sqlite_triggers
    for table in _APPEND_ONLY:
        for statement in triggers(table):
            op.execute(statement)
    op.execute(_view(dialect))


def downgrade() -> None:
    from recorder.store.hashing import GENESIS

    conn = op.get_bind()
    dialect = conn.dialect.name
    op.execute("DROP VIEW event_rows")
    for table in _APPEND_ONLY:
        _drop_triggers(
            dialect, [table], ["no_update", "no_delete", "no_replace", "no_update_delete",
                               "no_truncate", "no_clash"]
        )  # fmt: skip
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS codetape_events_no_clash()")
    op.rename_table("events", "events_0005")
    if dialect == "postgresql":
        op.execute("ALTER TABLE events_0005 RENAME CONSTRAINT pk_events TO pk_events_0005")
    # The wide table as 0001 made it (indexes, triggers: 0001 and 0004).
    op.create_table(
        "events",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("exchange_id", sa.String(64), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("recorded_at_ns", sa.BigInteger(), nullable=False),
        sa.Column("offset_ns", sa.BigInteger(), nullable=True),
        sa.Column("sse_event", sa.Text(), nullable=True),
        sa.Column("sse_type", sa.String(200), nullable=True),
        sa.Column("sequence_number", sa.BigInteger(), nullable=True),
        sa.Column("response_id", sa.String(200), nullable=True),
        sa.Column("meta", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("hash_format", sa.String(16), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_events"),
    )
    hex_ = "encode(e.hash, 'hex')" if dialect == "postgresql" else "lower(hex(e.hash))"
    select = sa.text(
        "SELECT e.position, s.public_id, x.public_id, e.seq, k.public_id, e.recorded_at_ns, "
        "e.offset_ns, se.public_id, st.public_id, e.sequence_number, r.public_id, "
        f"coalesce(e.meta, '{{}}'), e.codec, e.payload, hf.public_id, {hex_}, it.public_id "
        "FROM events_0005 e "
        "LEFT JOIN sessions s ON s.id = e.session_key "
        "LEFT JOIN exchanges x ON x.id = e.exchange_key "
        "LEFT JOIN names k ON k.id = e.kind_key "
        "LEFT JOIN names se ON se.id = e.sse_event_key "
        "LEFT JOIN names st ON st.id = e.sse_type_key "
        "LEFT JOIN responses r ON r.id = e.response_key "
        "LEFT JOIN items it ON it.id = e.item_key "
        "LEFT JOIN names hf ON hf.id = e.hash_format_key "
        "WHERE e.position > :after ORDER BY e.position LIMIT :limit"
    )
    marker = "?" if dialect == "sqlite" else "%s"
    insert = f"INSERT INTO events ({', '.join(_WIDE)}) VALUES ({', '.join([marker] * 16)})"
    after, prev, prev_position = 0, GENESIS, 0
    while True:
        rows = conn.execute(select, {"after": after, "limit": _PAGE}).all()
        if not rows:
            break
        wide = []
        for r in rows:
            position = r[0]
            link = prev if position == prev_position + 1 else ""
            payload = codec.decode(r[12], bytes(r[13]), r[7], r[16])
            wide.append((*r[:12], payload, r[14], link, r[15]))
            prev, prev_position = r[15], position
        conn.exec_driver_sql(insert, wide)
        after = rows[-1][0]
    op.drop_table("events_0005")
    for table in reversed(_KEY_TABLES):
        op.drop_table(table)
    op.create_index("ix_events_session_position", "events", ["session_id", "position"])
    op.create_index("ix_events_kind_session", "events", ["kind", "session_id"])
    with_x, without_x = sa.text("exchange_id IS NOT NULL"), sa.text("exchange_id IS NULL")
    op.create_index(
        "ux_events_exchange_seq", "events", ["exchange_id", "seq"], unique=True,
        sqlite_where=with_x, postgresql_where=with_x,
    )  # fmt: skip
    op.create_index(
        "ux_events_session_seq", "events", ["session_id", "seq"], unique=True,
        sqlite_where=without_x, postgresql_where=without_x,
    )  # fmt: skip
    if dialect == "postgresql":
        op.execute(
            """CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
       FOR EACH ROW EXECUTE FUNCTION codetape_events_immutable()"""
        )
        op.execute(
            """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
       FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_immutable()"""
        )
    else:
        op.execute(
            f"""CREATE TRIGGER events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}: UPDATE refused'); END"""
        )
        op.execute(
            f"""CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}: DELETE refused'); END"""
        )
        op.execute(
            """CREATE TRIGGER events_no_replace BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE position = NEW.position)
  OR (NEW.exchange_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM events WHERE exchange_id = NEW.exchange_id AND seq = NEW.seq))
  OR (NEW.exchange_id IS NULL AND EXISTS (
        SELECT 1 FROM events
        WHERE session_id = NEW.session_id AND seq = NEW.seq AND exchange_id IS NULL))
BEGIN
  SELECT RAISE(ABORT, 'codetape events are immutable: INSERT over an existing event refused');
END"""
        )

"""The immutable event log: the events table, its indexes, and triggers that refuse change.

Revision ID: 0001_event_log
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_event_log"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
       BEGIN SELECT RAISE(ABORT, 'codetape events are immutable: UPDATE refused'); END""",
    """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
       BEGIN SELECT RAISE(ABORT, 'codetape events are immutable: DELETE refused'); END""",
]

_PG_TRIGGERS = [
    """CREATE FUNCTION codetape_events_immutable() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'codetape events are immutable: % refused', TG_OP
           USING ERRCODE = 'restrict_violation';
       END $$""",
    """CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
       FOR EACH ROW EXECUTE FUNCTION codetape_events_immutable()""",
    """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
       FOR EACH STATEMENT EXECUTE FUNCTION codetape_events_immutable()""",
]


def upgrade() -> None:
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
    op.create_index("ix_events_session_position", "events", ["session_id", "position"])
    op.create_index("ix_events_kind_session", "events", ["kind", "session_id"])
    exchange_not_null = sa.text("exchange_id IS NOT NULL")
    exchange_null = sa.text("exchange_id IS NULL")
    op.create_index(
        "ux_events_exchange_seq",
        "events",
        ["exchange_id", "seq"],
        unique=True,
        sqlite_where=exchange_not_null,
        postgresql_where=exchange_not_null,
    )
    op.create_index(
        "ux_events_session_seq",
        "events",
        ["session_id", "seq"],
        unique=True,
        sqlite_where=exchange_null,
        postgresql_where=exchange_null,
    )
    statements = _PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    # Dropping the log is only possible by migrating down on purpose.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_no_truncate ON events")
        op.execute("DROP TRIGGER IF EXISTS events_no_update_delete ON events")
        op.execute("DROP FUNCTION IF EXISTS codetape_events_immutable()")
    else:
        op.execute("DROP TRIGGER IF EXISTS events_no_update")
        op.execute("DROP TRIGGER IF EXISTS events_no_delete")
    op.drop_table("events")

"""The log's tables, declared once for SQLAlchemy and for Alembic's autogenerate check.

Guarantees: ``events`` is append-only (the migrations add triggers on both
backends that make any UPDATE or DELETE fail); ``position`` orders every event
globally; ``(exchange_id, seq)`` and, for session-level events,
``(session_id, seq)`` are unique. Projection tables live in the same metadata
but are ordinary mutable tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = ["SCHEMA_REVISION", "events", "metadata"]

# The Alembic revision this code expects; a test pins it to the script head.
SCHEMA_REVISION = "0001_event_log"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BigInteger on PostgreSQL, but INTEGER PRIMARY KEY on SQLite so that the
# position is the rowid: the cheapest possible ordered key there.
_position_type = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("position", _position_type, primary_key=True, autoincrement=False),
    Column("session_id", String(64), nullable=False),
    Column("exchange_id", String(64), nullable=True),
    Column("seq", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("recorded_at_ns", BigInteger, nullable=False),
    Column("offset_ns", BigInteger, nullable=True),
    Column("sse_event", Text, nullable=True),
    Column("sse_type", String(200), nullable=True),
    Column("sequence_number", BigInteger, nullable=True),
    Column("response_id", String(200), nullable=True),
    Column("meta", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("hash_format", String(16), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

Index("ix_events_session_position", events.c.session_id, events.c.position)
Index("ix_events_kind_session", events.c.kind, events.c.session_id)
Index(
    "ux_events_exchange_seq",
    events.c.exchange_id,
    events.c.seq,
    unique=True,
    sqlite_where=events.c.exchange_id.is_not(None),
    postgresql_where=events.c.exchange_id.is_not(None),
)
Index(
    "ux_events_session_seq",
    events.c.session_id,
    events.c.seq,
    unique=True,
    sqlite_where=events.c.exchange_id.is_(None),
    postgresql_where=events.c.exchange_id.is_(None),
)

"""The log's tables, declared once for SQLAlchemy and for Alembic's autogenerate check.

Guarantees: ``events`` is append-only (the migrations add triggers on both
backends that make any UPDATE or DELETE fail, and on SQLite any INSERT that
would replace a row); ``position`` orders every event globally and is the
primary key (alone: the table can later be range-partitioned by position);
no two events share ``(exchange_key, seq)``, nor, for session-level events,
``(session_key, seq)`` (an insert trigger refuses the second: a unique index
would not survive partitioning). The row is lean: sessions, exchanges and
response ids are integer keys into ``sessions``, ``exchanges`` and
``responses``, and kinds, SSE event names, SSE types and hash formats keys
into ``names``, each public value stored once, and a frame's output item
id is cut out of its payload into ``items``; those key tables are
append-only too. ``meta`` is NULL when empty, ``hash`` is the 32 raw bytes
of the SHA-256, the predecessor's hash is not repeated, and ``payload`` is
compressed when ``codec`` names a dictionary (see
:mod:`recorder.store.codec`). The view ``event_rows`` (:data:`event_rows`)
shows every event with its public values, as the log looked before the lean
row: SQL readers use it. Projection tables live in the same metadata but are
ordinary mutable tables, and so is ``leases``, the bookkeeping of which
recorder still holds which open session (see :mod:`recorder.lease`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

from recorder.store.revision import SCHEMA_REVISION

__all__ = [
    "KEY_TABLES",
    "SCHEMA_REVISION",
    "event_rows",
    "events",
    "exchanges",
    "items",
    "leases",
    "metadata",
    "names",
    "pj_audit",
    "pj_checkpoints",
    "pj_chunks",
    "pj_ci_stages",
    "pj_container_files",
    "pj_containers",
    "pj_costs",
    "responses",
    "sessions",
]


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


def _key_table(name: str, length: int, *extra: Column[Any]) -> Table:
    # The id is the rowid on SQLite; the public value is looked up once per
    # batch (and cached), so its unique index is the table's only index.
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("public_id", String(length), nullable=False, unique=True),
        *extra,
    )


# ``first_position`` (since 0006, filled on PostgreSQL by an insert trigger):
# the log's head + 1 when the key was made, so a bound below every event of
# that stream; the stream-uniqueness trigger probes only partitions from there.
sessions = _key_table("sessions", 64, Column("first_position", BigInteger, nullable=True))
# The session of the exchange's first event (each event keeps its own too).
exchanges = _key_table(
    "exchanges",
    64,
    Column("session_key", Integer, nullable=False),
    Column("first_position", BigInteger, nullable=True),
)
responses = _key_table("responses", 200)
# Output item ids (``"item_id"`` of a frame's JSON), cut out of the payload.
items = _key_table("items", 200)
names = _key_table("names", 200)
KEY_TABLES = ("sessions", "exchanges", "responses", "items", "names")

# Columns ordered widest first (8-byte, 4-byte, 2-byte, then variable
# length): PostgreSQL aligns each value to its width, so this order leaves no
# padding in a row; SQLite does not care. Since 0008 ``sequence_number`` is an
# integer (up to 2,147,483,647 frames per response) and the SSE name keys
# smallints (``names`` holds at most 32,767 values: ``kind_key`` was one
# already) on PostgreSQL; SQLite keeps its declared types, its integers take
# the bytes their values need anyway.
_names_key = SmallInteger().with_variant(Integer(), "sqlite")
events = Table(
    "events",
    metadata,
    Column("position", _position_type, primary_key=True, autoincrement=False),
    Column("recorded_at_ns", BigInteger, nullable=False),
    Column("offset_ns", BigInteger, nullable=True),
    Column("sequence_number", Integer().with_variant(BigInteger(), "sqlite"), nullable=True),
    Column("session_key", Integer, nullable=False),
    Column("exchange_key", Integer, nullable=True),
    Column("seq", Integer, nullable=False),
    Column("response_key", Integer, nullable=True),
    Column("item_key", Integer, nullable=True),
    Column("sse_event_key", _names_key, nullable=True),
    Column("sse_type_key", _names_key, nullable=True),
    Column("kind_key", SmallInteger, nullable=False),
    Column("hash_format_key", SmallInteger, nullable=False),
    Column("codec", SmallInteger, nullable=True),
    Column("hash", LargeBinary, nullable=False),
    Column("meta", Text, nullable=True),
    Column("payload", LargeBinary, nullable=False),
)

# Session reads (its events in order) and the per-stream seq lookups. No
# index on kind: session opens and closes are found through the small
# session-level index, exchanges per session through ``exchanges``.
Index("ix_events_session_key_position", events.c.session_key, events.c.position)
Index(
    "ix_events_exchange_key_seq",
    events.c.exchange_key,
    events.c.seq,
    sqlite_where=events.c.exchange_key.is_not(None),
    postgresql_where=events.c.exchange_key.is_not(None),
)
Index(
    "ix_events_session_key_seq",
    events.c.session_key,
    events.c.seq,
    sqlite_where=events.c.exchange_key.is_(None),
    postgresql_where=events.c.exchange_key.is_(None),
)

# The view over ``events`` with public values (created by the migrations, so
# kept out of ``metadata``): what SQL readers query. ``payload`` there is the
# stored form: decode it with ``codec`` (recorder.store.codec.decode).
event_rows = Table(
    "event_rows",
    MetaData(),
    Column("position", BigInteger, primary_key=True),
    Column("session_id", String(64)),
    Column("exchange_id", String(64)),
    Column("seq", Integer),
    Column("kind", String(32)),
    Column("recorded_at_ns", BigInteger),
    Column("offset_ns", BigInteger),
    Column("sse_event", Text),
    Column("sse_type", String(200)),
    Column("sequence_number", BigInteger),
    Column("response_id", String(200)),
    Column("item_id", String(200)),
    Column("meta", Text),
    Column("codec", SmallInteger),
    Column("stored_payload", LargeBinary),
    Column("hash_format", String(16)),
    Column("prev_hash", String(64)),
    Column("hash", String(64)),
)

# -- leases -----------------------------------------------------------------
# Mutable bookkeeping beside the log, never part of it: one row per session a
# live recorder holds, renewed by that recorder, deleted when it releases the
# session or a repair closes it (see recorder.lease). All times are the
# database's clock, in ns since the Unix epoch.

leases = Table(
    "leases",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("recorder", Text, nullable=False),
    Column("duration_ns", BigInteger, nullable=False),
    Column("acquired_at_ns", BigInteger, nullable=False),
    Column("renewed_at_ns", BigInteger, nullable=False),
    Column("expires_at_ns", BigInteger, nullable=False),
)
Index("ix_leases_holder", leases.c.holder)

# -- projections -------------------------------------------------------------
# Derived read models (see recorder.projections). Ordinary mutable tables: a
# projection may delete and rewrite its own rows at any time, because every
# row can be rebuilt from the log. Each projection's checkpoint row is written
# in the same transaction as its rows.

pj_checkpoints = Table(
    "pj_checkpoints",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("updated_at_ns", BigInteger, nullable=False),
)

pj_chunks = Table(
    "pj_chunks",
    metadata,
    # Keyed by session first: the one read is "a session's chunks in order",
    # and one index instead of two halves the cost of a rebuild's inserts.
    Column("session_id", String(64), primary_key=True),
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("part", Integer, primary_key=True, autoincrement=False),
    Column("exchange_id", String(64), nullable=True),
    Column("response_id", String(200), nullable=True),
    Column("kind", String(32), nullable=False),
    Column("stage", String(16), nullable=True),
    Column("call_id", String(200), nullable=True),
    Column("output", Text, nullable=False),
    Column("data", Text, nullable=False),
)

pj_ci_stages = Table(
    "pj_ci_stages",
    metadata,
    Column("exchange_id", String(64), primary_key=True),
    Column("call_id", String(200), primary_key=True),
    Column("session_id", String(64), nullable=False),
    Column("response_id", String(200), nullable=True),
    Column("container_id", String(200), nullable=True),
    Column("output_index", Integer, nullable=True),
    Column("status", String(16), nullable=False),
    Column("streamed", Boolean, nullable=False),
    Column("first_position", BigInteger, nullable=False),
    Column("started_at_ns", BigInteger, nullable=False),
    Column("started_ns", BigInteger, nullable=True),
    Column("in_progress_ns", BigInteger, nullable=True),
    Column("first_delta_ns", BigInteger, nullable=True),
    Column("code_done_ns", BigInteger, nullable=True),
    Column("interpreting_ns", BigInteger, nullable=True),
    Column("completed_ns", BigInteger, nullable=True),
    Column("item_done_ns", BigInteger, nullable=True),
    Column("delta_count", Integer, nullable=False),
    Column("response_created_at", BigInteger, nullable=True),
    Column("response_completed_at", BigInteger, nullable=True),
)
Index(
    "ix_pj_ci_stages_session_id_first_position",
    pj_ci_stages.c.session_id,
    pj_ci_stages.c.first_position,
)

pj_audit = Table(
    "pj_audit",
    metadata,
    Column("exchange_id", String(64), primary_key=True),
    Column("call_id", String(200), primary_key=True),
    Column("session_id", String(64), nullable=False),
    Column("response_id", String(200), nullable=True),
    Column("container_id", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("code", Text, nullable=False),
    Column("outputs", Text, nullable=True),
    Column("started_at_ns", BigInteger, nullable=False),
    Column("finished_at_ns", BigInteger, nullable=True),
    Column("first_position", BigInteger, nullable=False),
    Column("last_position", BigInteger, nullable=False),
    Column("positions", Text, nullable=False),
)
Index("ix_pj_audit_session_id_first_position", pj_audit.c.session_id, pj_audit.c.first_position)
Index("ix_pj_audit_first_position", pj_audit.c.first_position)

pj_costs = Table(
    "pj_costs",
    metadata,
    Column("exchange_id", String(64), primary_key=True),
    Column("session_id", String(64), nullable=False),
    Column("response_id", String(200), nullable=True),
    Column("at_ns", BigInteger, nullable=False),
    Column("first_position", BigInteger, nullable=False),
    Column("endpoint", String(32), nullable=False),
    Column("requested_model", String(200), nullable=True),
    Column("model", String(200), nullable=True),
    Column("status", String(32), nullable=True),
    Column("service_tier", String(32), nullable=True),
    Column("input_tokens", BigInteger, nullable=True),
    Column("cached_tokens", BigInteger, nullable=True),
    Column("output_tokens", BigInteger, nullable=True),
    Column("reasoning_tokens", BigInteger, nullable=True),
    Column("ci_container", String(200), nullable=True),
    Column("ci_memory", String(8), nullable=True),
    Column("ci_calls", Integer, nullable=False),
    Column("containers", Text, nullable=False),
)
Index("ix_pj_costs_session_id", pj_costs.c.session_id)
Index("ix_pj_costs_at_ns", pj_costs.c.at_ns)

pj_containers = Table(
    "pj_containers",
    metadata,
    Column("container_id", String(200), primary_key=True),
    Column("memory", String(8), nullable=True),
    Column("created_via", String(16), nullable=False),
    Column("created_exchange_id", String(64), nullable=True),
    Column("session_id", String(64), nullable=False),
    Column("created_at_ns", BigInteger, nullable=True),
    Column("first_position", BigInteger, nullable=False),
    Column("first_activity_ns", BigInteger, nullable=False),
    Column("last_activity_ns", BigInteger, nullable=False),
    Column("last_session_id", String(64), nullable=False),
    Column("expires_after_minutes", Integer, nullable=True),
    Column("deleted_at_ns", BigInteger, nullable=True),
    Column("calls", Integer, nullable=False),
    Column("exchanges", Integer, nullable=False),
)
Index("ix_pj_containers_created_exchange_id", pj_containers.c.created_exchange_id)

pj_container_files = Table(
    "pj_container_files",
    metadata,
    Column("container_id", String(200), primary_key=True),
    Column("file_id", String(200), primary_key=True),
    Column("filename", Text, nullable=True),
    Column("source", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=True),
    Column("first_position", BigInteger, nullable=False),
    Column("exchange_id", String(64), nullable=True),
)

"""Refuse on SQLite any INSERT that would replace an existing event.

Revision ID: 0004_no_replace
Revises: 0003_leases
Create Date: 2026-11-26

SQLite resolves a uniqueness conflict under ``INSERT OR REPLACE`` (also
spelled ``REPLACE INTO``, or forced by ``OR REPLACE`` on an ``UPDATE``) by
deleting the row in the way, and it fires no delete trigger for that deletion
(unless a connection turns ``recursive_triggers`` on, which the one replacing
the row would not). ``events_no_delete`` alone therefore let a row be
swapped for another with a recomputed hash. The trigger below runs before
every insert and aborts it when the new row's position, or its place in its
stream (``(exchange_id, seq)`` for exchange events, ``(session_id, seq)`` for
session events: the two unique indexes of ``0001_event_log``), is already
taken. So no conflict clause can reach the point of replacing anything:
``OR REPLACE``, ``OR IGNORE``, ``ON CONFLICT DO NOTHING`` and ``DO UPDATE``
are all refused. An append does one primary-key and one index lookup per row
for it (see the README for what that costs).

PostgreSQL needs nothing here: it has no REPLACE, an ``ON CONFLICT DO
UPDATE`` or a ``MERGE`` that finds an existing row runs it as an UPDATE (or
DELETE), which ``0001_event_log``'s row trigger refuses, and ``DO NOTHING``
writes nothing. ``tests/test_store.py`` tries every conflict clause on both.

The projection tables (``0002_projections``) are not append-only by design
(a projection rewrites its own rows, and a rebuild empties them), so they get
no such trigger.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_no_replace"
down_revision: str | None = "0003_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# NEW.position is -1 when the insert leaves it to SQLite (NULL for the rowid):
# then only the stream checks can match, which is right, as a fresh rowid
# replaces nothing.
_SQLITE_TRIGGER = """CREATE TRIGGER events_no_replace BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE position = NEW.position)
  OR (NEW.exchange_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM events WHERE exchange_id = NEW.exchange_id AND seq = NEW.seq))
  OR (NEW.exchange_id IS NULL AND EXISTS (
        SELECT 1 FROM events
        WHERE session_id = NEW.session_id AND seq = NEW.seq AND exchange_id IS NULL))
BEGIN
  SELECT RAISE(ABORT, 'codetape events are immutable: INSERT over an existing event refused');
END"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(_SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS events_no_replace")

"""PostgreSQL's stream check: one index range per stream in an insert, not one probe per row.

Revision ID: 0007_stream_check
Revises: 0005_lean_log
Create Date: 2026-12-02

The statement trigger ``events_no_clash`` of 0005 refuses an INSERT or COPY
that puts a second event at a stream's ``(exchange_key, seq)`` (or, for
session-level events, ``(session_key, seq)``). It counted, for every
inserted row, the rows holding its place. This revision keeps the trigger
and what it refuses, and only changes how its function looks: per stream
in the statement, the rows of that stream between the statement's lowest
and highest seq are read once, in index order, and there is a clash exactly
when two of them share a seq. Rows already in the log never clash with
each other (every earlier insert was checked), so any clash involves an
inserted row, whose seq lies in that range. A batch of frames of one
exchange is one range scan instead of one index descent per frame.

Nothing else changes: no table, index or data; SQLite's row trigger stays.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007_stream_check"
down_revision: str | None = "0005_lean_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REFUSE = (
    "    RAISE EXCEPTION 'codetape events are immutable: INSERT over an existing event refused'\n"
    "      USING ERRCODE = 'unique_violation';"
)

_GROUPED = f"""CREATE OR REPLACE FUNCTION codetape_events_no_clash() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- Per stream of the inserted rows, its rows in [lowest, highest seq]:
  -- more rows than distinct seqs there is a clash (see migration 0007).
  IF EXISTS (
    SELECT 1 FROM (
      SELECT exchange_key AS k, min(seq) AS lo, max(seq) AS hi FROM new_rows
      WHERE exchange_key IS NOT NULL GROUP BY exchange_key) g
    WHERE (SELECT count(*) - count(DISTINCT e.seq) FROM events e
           WHERE e.exchange_key = g.k AND e.exchange_key IS NOT NULL
             AND e.seq BETWEEN g.lo AND g.hi) > 0
  ) OR EXISTS (
    SELECT 1 FROM (
      SELECT session_key AS k, min(seq) AS lo, max(seq) AS hi FROM new_rows
      WHERE exchange_key IS NULL GROUP BY session_key) g
    WHERE (SELECT count(*) - count(DISTINCT e.seq) FROM events e
           WHERE e.session_key = g.k AND e.exchange_key IS NULL
             AND e.seq BETWEEN g.lo AND g.hi) > 0
  ) THEN
{_REFUSE}
  END IF;
  RETURN NULL;
END $$"""

# 0005's function, as it was.
_PER_ROW = f"""CREATE OR REPLACE FUNCTION codetape_events_no_clash() RETURNS trigger
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
{_REFUSE}
  END IF;
  RETURN NULL;
END $$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_GROUPED)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PER_ROW)

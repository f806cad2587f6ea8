"""PostgreSQL's stream check: one index range per stream in an insert, not one probe per row.

Revision ID: 0007_stream_check
Revises: 0006_partitions
Create Date: 2026-12-02

The statement trigger ``events_no_clash`` (0005, bounded by each
stream's ``first_position`` since 0006) refuses an INSERT or COPY
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
down_revision: str | None = "0006_partitions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REFUSE = (
    "    RAISE EXCEPTION 'codetape events are immutable: INSERT over an existing event refused'\n"
    "      USING ERRCODE = 'unique_violation';"
)

_GROUPED = f"""CREATE OR REPLACE FUNCTION codetape_events_no_clash() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  g record;
  low bigint;
  clash boolean;
BEGIN
  -- Per stream of the inserted rows, its rows in [lowest, highest seq]:
  -- more rows than distinct seqs there is a clash. The stream's
  -- first_position (0006), a variable, prunes older partitions unopened.
  FOR g IN SELECT exchange_key AS k, min(seq) AS lo, max(seq) AS hi FROM new_rows
           WHERE exchange_key IS NOT NULL GROUP BY exchange_key LOOP
    low := coalesce((SELECT first_position FROM exchanges WHERE id = g.k), 1);
    SELECT count(*) > count(DISTINCT e.seq) INTO clash FROM events e
      WHERE e.exchange_key = g.k AND e.seq BETWEEN g.lo AND g.hi AND e.position >= low;
    IF clash THEN
{_REFUSE}
    END IF;
  END LOOP;
  FOR g IN SELECT session_key AS k, min(seq) AS lo, max(seq) AS hi FROM new_rows
           WHERE exchange_key IS NULL GROUP BY session_key LOOP
    low := coalesce((SELECT first_position FROM sessions WHERE id = g.k), 1);
    SELECT count(*) > count(DISTINCT e.seq) INTO clash FROM events e
      WHERE e.session_key = g.k AND e.exchange_key IS NULL
        AND e.seq BETWEEN g.lo AND g.hi AND e.position >= low;
    IF clash THEN
{_REFUSE}
    END IF;
  END LOOP;
  RETURN NULL;
END $$"""

# 0006's function, as it was: one probe per inserted row.
_PER_ROW = f"""CREATE OR REPLACE FUNCTION codetape_events_no_clash() RETURNS trigger
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
{_REFUSE}
    END IF;
  END LOOP;
  RETURN NULL;
END $$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_GROUPED)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PER_ROW)

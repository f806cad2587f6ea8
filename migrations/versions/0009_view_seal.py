"""PostgreSQL's ``event_rows`` view: the first live row after a drop shows its ``prev_hash``.

Revision ID: 0009_view_seal
Revises: 0008_pg_lean
Create Date: 2026-12-03

The view computes each row's ``prev_hash`` from the row before it. Once an
archive's partitions are dropped, the first live row's predecessor has left
the table and the view showed NULL there, though the log knows the value:
the seal (the ``archived`` event of the ``codetape-archive`` session) lists
each archived segment's last position and head hash. The view now falls
back to the seal when, and only when, the predecessor row is gone, reading
the archive session's events through its index; every other row reads as
before.

Only the view changes (``CREATE OR REPLACE VIEW``: its columns, grants and
dependants stay); no table, row or hash. SQLite, which has no partitions to
drop, is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009_view_seal"
down_revision: str | None = "0008_pg_lean"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GENESIS = "0" * 64
# The archive session's id (recorder.store.seal.ARCHIVE_SESSION), fixed here
# as a migration fixes what it wrote.
_ARCHIVE_SESSION = "codetape-archive"

_PREDECESSOR = "(SELECT encode(p.hash, 'hex') FROM events p WHERE p.position = e.position - 1)"
# Any seal lists every segment sealed so far; a segment's head hash is the
# hash of its last row, the predecessor of the row after it.
_FROM_SEAL = f"""(SELECT seg ->> 'head_hash'
         FROM events a
         JOIN names ak ON ak.id = a.kind_key AND ak.public_id = 'archived',
         jsonb_array_elements(CASE jsonb_typeof(a.meta::jsonb -> 'segments')
                              WHEN 'array' THEN a.meta::jsonb -> 'segments'
                              ELSE '[]'::jsonb END) AS seg
         WHERE a.session_key = (SELECT id FROM sessions WHERE public_id = '{_ARCHIVE_SESSION}')
           AND a.exchange_key IS NULL
           AND seg ->> 'last' = (e.position - 1)::text
         LIMIT 1)"""


def _view(prev_hash: str) -> str:
    # 0008's view but for prev_hash.
    return f"""CREATE OR REPLACE VIEW event_rows AS SELECT
  e.position AS position, s.public_id AS session_id, x.public_id AS exchange_id,
  e.seq AS seq, k.public_id AS kind, e.recorded_at_ns AS recorded_at_ns,
  e.offset_ns AS offset_ns, se.public_id AS sse_event, st.public_id AS sse_type,
  e.sequence_number AS sequence_number, r.public_id AS response_id, it.public_id AS item_id,
  coalesce(e.meta, '{{}}') AS meta, e.codec AS codec, e.payload AS stored_payload,
  hf.public_id AS hash_format,
  CASE WHEN e.position = 1 THEN '{_GENESIS}'
       ELSE {prev_hash}
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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # COALESCE stops at its first non-NULL argument: the seal is read only
    # for a row whose predecessor is gone.
    op.execute(_view(f"coalesce({_PREDECESSOR},\n       {_FROM_SEAL})"))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_view(_PREDECESSOR))

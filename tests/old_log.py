"""A log at an older schema revision on PostgreSQL, written by this codetape.

The store only writes the current layout (its binary COPY sends each column
in the current type), so :func:`old_log` appends with it to a scratch
database at the head revision and copies every key and row, by column name,
into a database left at an older revision: PostgreSQL converts each value to
that revision's column type, the keys and positions stay, and so does every
hash. Rows beyond the older database's ranges land in its default partition.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from recorder.events import Event
from recorder.store import EventStore
from recorder.store.schema import KEY_TABLES

_EVENT_COLUMNS = (
    "position, recorded_at_ns, offset_ns, sequence_number, session_key, exchange_key, seq, "
    "sse_event_key, sse_type_key, response_key, item_key, kind_key, hash_format_key, codec, "
    "hash, meta, payload"
)
_KEY_COLUMNS = {t: "id, public_id" for t in KEY_TABLES}
_KEY_COLUMNS["exchanges"] = "id, public_id, session_key"


def old_log(scratch_url: str, url: str, events: Sequence[Sequence[Event]]) -> None:
    """Append each batch of ``events`` at head in ``scratch_url``, copy the log into ``url``.

    ``url`` must already be at the older revision (its partitions as wanted).
    """
    with EventStore.open(scratch_url, upgrade=True) as store:
        for batch in events:
            store.append(list(batch))
        assert store.verify().ok
        with store.engine.connect() as conn:
            keys = {
                t: conn.exec_driver_sql(f"SELECT {c} FROM {t}").all()
                for t, c in _KEY_COLUMNS.items()
            }
            rows = conn.exec_driver_sql(
                f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY position"
            ).all()
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for table, columns in _KEY_COLUMNS.items():
                if keys[table]:
                    marks = ", ".join(["%s"] * len(columns.split(",")))
                    conn.exec_driver_sql(
                        f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                        [tuple(r) for r in keys[table]],
                    )
            conn.exec_driver_sql(
                f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join(['%s'] * 17)})",
                [tuple(r) for r in rows],
            )
    finally:
        engine.dispose()

"""Tampering with a log the way an attacker with write access to its database would.

``tamper`` switches the immutability triggers off and runs raw SQL; ``rewrite``
replaces the whole log with rows of the attacker's choosing, each with a hash
recomputed on its new predecessor, so the chain is internally consistent and
plain ``verify`` has nothing to object to.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from recorder.events import Event, StoredEvent, canonical_json
from recorder.store import EventStore
from recorder.store.hashing import GENESIS, HASH_FORMAT, event_hash

COLUMNS = (
    "position", "session_id", "exchange_id", "seq", "kind", "recorded_at_ns", "offset_ns",
    "sse_event", "sse_type", "sequence_number", "response_id", "meta", "payload",
    "hash_format", "prev_hash", "hash",
)  # fmt: skip


def tamper(store: EventStore, *statements: str) -> None:
    with store.engine.begin() as conn:
        if store.backend == "postgresql":
            conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS events_no_delete")
        for statement in statements:
            conn.exec_driver_sql(statement)
        if store.backend == "postgresql":
            conn.exec_driver_sql("ALTER TABLE events ENABLE TRIGGER USER")


def rows(store: EventStore) -> list[StoredEvent]:
    return list(store.iter_events())


def rewrite(store: EventStore, new_rows: Sequence[tuple[int, Event | StoredEvent]]) -> None:
    """Make the log exactly ``new_rows`` ((position, event) pairs), re-chained from genesis."""
    prev = GENESIS
    values = []
    for position, ev in new_rows:
        meta_json = ev.meta_json if isinstance(ev, StoredEvent) else canonical_json(dict(ev.meta))
        assert ev.seq is not None
        fields = (
            position, ev.session_id, ev.exchange_id, ev.seq, ev.kind.value, ev.recorded_at_ns,
            ev.offset_ns, ev.sse_event, ev.sse_type, ev.sequence_number, ev.response_id,
            meta_json, ev.payload,
        )  # fmt: skip
        digest = event_hash(prev, *fields)
        values.append(dict(zip(COLUMNS, (*fields, HASH_FORMAT, prev, digest), strict=True)))
        prev = digest
    tamper(store, "DELETE FROM events")
    insert = sa.text(
        f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})"
    )
    with store.engine.begin() as conn:
        for value in values:
            conn.execute(insert, value)

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
from recorder.store import EventStore, codec
from recorder.store.hashing import GENESIS, HASH_FORMAT, event_digest
from recorder.store.keys import Keys

LEAN = (
    "position", "session_key", "exchange_key", "seq", "kind_key", "recorded_at_ns", "offset_ns",
    "sse_event_key", "sse_type_key", "sequence_number", "response_key", "item_key", "meta",
    "codec", "payload", "hash_format_key", "hash",
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
    """Make the log exactly ``new_rows`` ((position, event) pairs), re-chained from genesis.

    Rows go in as the store writes them (keys, compressed payloads), each
    hashed on the row before it in ``new_rows``.
    """
    tamper(store, "DELETE FROM events")
    keys = Keys()
    keys.begin()
    prev = GENESIS
    insert = sa.text(
        f"INSERT INTO events ({', '.join(LEAN)}) VALUES ({', '.join(':' + c for c in LEAN)})"
    )
    with store.engine.begin() as conn:
        for position, ev in new_rows:
            meta_json = (
                ev.meta_json if isinstance(ev, StoredEvent) else canonical_json(dict(ev.meta))
            )
            assert ev.seq is not None
            digest = event_digest(
                prev, position, ev.session_id, ev.exchange_id, ev.seq, ev.kind.value,
                ev.recorded_at_ns, ev.offset_ns, ev.sse_event, ev.sse_type, ev.sequence_number,
                ev.response_id, meta_json, ev.payload,
            )  # fmt: skip
            session_key = keys.key(conn, "sessions", ev.session_id)
            stored_codec, stored, item = codec.encode(ev.payload, sse_event=ev.sse_event)

            def name(value: str | None) -> int | None:
                return None if value is None else keys.key(conn, "names", value)

            values = (
                position, session_key,
                None if ev.exchange_id is None
                else keys.key(conn, "exchanges", ev.exchange_id, session_key),
                ev.seq, name(ev.kind.value), ev.recorded_at_ns, ev.offset_ns,
                name(ev.sse_event), name(ev.sse_type), ev.sequence_number,
                None if ev.response_id is None else keys.key(conn, "responses", ev.response_id),
                None if item is None else keys.key(conn, "items", item),
                None if meta_json == "{}" else meta_json, stored_codec, stored,
                name(HASH_FORMAT), digest,
            )  # fmt: skip
            conn.execute(insert, dict(zip(LEAN, values, strict=True)))
            prev = digest.hex()

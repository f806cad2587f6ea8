"""The SQLite append: the batch's lean rows hashed and inserted in multi-row INSERTs.

Guarantees:

* **Lean rows.** Each event is stored as the lean row of
  :mod:`recorder.store.schema` (:data:`LEAN_COLUMNS`: keys, binary hash,
  payload compressed by :mod:`recorder.store.codec`), chained to the row
  before it with the hash :func:`~recorder.store.hashing.event_digest` gives.
* **All under the caller's transaction.** :meth:`SqliteAppender.append` runs
  in a transaction the caller began with the write lock (``BEGIN
  IMMEDIATE``): the head, the hooks, new keys and the rows commit together or
  not at all.
* **Few statements, few GIL handoffs.** Rows go in INSERTs of many rows each
  (see :meth:`SqliteAppender._insert`), and what the events of one stream
  share is looked up once per batch.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa

from recorder.events import canonical_json
from recorder.store.append_common import (
    Batch,
    next_seqs,
    seq_of,
    text_or,
)
from recorder.store.codec import encode_all
from recorder.store.hashing import GENESIS, HASH_FORMAT, event_digest, row_digest, text, texts
from recorder.store.keys import Keys
from recorder.store.pgwire import HEAD

__all__ = ["LEAN_COLUMNS", "SqliteAppender"]

# What an append writes: the lean row.
LEAN_COLUMNS = (
    "position",
    "session_key",
    "exchange_key",
    "seq",
    "kind_key",
    "recorded_at_ns",
    "offset_ns",
    "sse_event_key",
    "sse_type_key",
    "sequence_number",
    "response_key",
    "item_key",
    "meta",
    "codec",
    "payload",
    "hash_format_key",
    "hash",
)
# Rows per multi-row INSERT on SQLite: 250 x 17 columns stays under 32,766,
# the bound-parameter limit since SQLite 3.32 (50 x 17 under 999 before it).
# Few statements per batch matter: the driver releases the GIL around each.
_ROWS_PER_INSERT = 250 if sqlite3.sqlite_version_info >= (3, 32, 0) else 50
_ROWS_PER_SMALL_INSERT = 25


class SqliteAppender:
    """Appends to one SQLite database, its keys cached in ``keys``."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self._values = "(" + ", ".join(["?"] * len(LEAN_COLUMNS)) + ")"
        self._insert_sql = (
            "INSERT INTO events (" + ", ".join(LEAN_COLUMNS) + ") VALUES " + self._values
        )
        self._multi_sql: dict[int, str] = {}

    def append(self, conn: sa.Connection, batch: Batch) -> list[int]:
        """Append ``batch`` in ``conn``'s transaction, the write lock held; their positions.

        The caller begins (``BEGIN IMMEDIATE``) and commits.
        """
        last = conn.exec_driver_sql(HEAD).first()
        items = batch.hooked(conn, last)
        if not items:
            return []  # the caller's commit keeps what the hooks wrote
        position, prev = (last[0], bytes(last[1]).hex()) if last is not None else (0, GENESIS)
        keys = self._keys
        keys.begin()
        key = keys.key
        responses, names = keys.ids["responses"], keys.ids["names"]
        item_keys = keys.ids["items"]
        hash_format = names.get(HASH_FORMAT) or key(conn, "names", HASH_FORMAT)
        next_seq = next_seqs(conn, items)
        first = position + 1
        # Compressed before the loop, in one call (see codec.encode_all).
        encoded = encode_all(
            [ev.payload for ev in items], [ev.sse_event for ev in items], batch.codec
        )
        # The rows' values one after another, as the multi-row INSERTs bind them.
        values: list[Any] = []
        # This loop runs once per recorded event, in the writer thread but
        # holding the GIL the client needs. What events of one stream
        # share (ids, kind, names, response) is looked up once per batch:
        # its keys and its hash header texts (see hashing.row_digest).
        # Per event, only its ints, its payload and its hash are new.
        append_row = values.extend
        streams: dict[tuple[str, str | None], tuple[int, int | None, str]] = {}
        kinds: dict[str, tuple[int, str]] = {}
        frames: dict[tuple[str | None, str | None], tuple[int | None, int | None, str]] = {}
        tails: dict[tuple[str | None, str], tuple[int | None, str, str | None]] = {}
        for ev, (stored_codec, stored, item) in zip(items, encoded, strict=True):
            position += 1
            seq = seq_of(ev, next_seq)
            meta = ev.meta
            # Most events (every SSE frame) have no meta: skip the encoder.
            meta_json = canonical_json(dict(meta)) if meta else "{}"
            kind = ev.kind._value_  # what .value returns, minus its descriptor
            sid, xid, rid = ev.session_id, ev.exchange_id, ev.response_id
            sse_event, sse_type, payload = ev.sse_event, ev.sse_type, ev.payload
            recorded_at_ns, offset_ns = ev.recorded_at_ns, ev.offset_ns
            sequence_number = ev.sequence_number
            try:
                stream = streams[sid, xid]
            except KeyError:
                stream = streams[sid, xid] = self._stream_keys(conn, sid, xid)
            try:
                kind_key, kind_text = kinds[kind]
            except KeyError:
                kind_key, kind_text = kinds[kind] = (
                    names.get(kind) or key(conn, "names", kind),
                    text_or(text, kind),
                )
            try:
                frame = frames[sse_event, sse_type]
            except KeyError:
                frame = frames[sse_event, sse_type] = (
                    None
                    if sse_event is None
                    else names.get(sse_event) or key(conn, "names", sse_event),
                    None
                    if sse_type is None
                    else names.get(sse_type) or key(conn, "names", sse_type),
                    text_or(texts, sse_event, sse_type),
                )
            try:
                tail = tails[rid, meta_json]
            except KeyError:
                tail = tails[rid, meta_json] = (
                    None if rid is None else responses.get(rid) or key(conn, "responses", rid),
                    text_or(texts, rid, meta_json),
                    None if meta_json == "{}" else meta_json,
                )
            try:
                # A text that could not be made ("") is not JSON: the fallback hashes it.
                if not (stream[2] and kind_text and frame[2] and tail[1]):
                    raise TypeError
                digest = row_digest(
                    prev,
                    position,
                    stream[2],
                    seq,
                    kind_text,
                    recorded_at_ns,
                    offset_ns,
                    frame[2],
                    sequence_number,
                    tail[1],
                    payload,
                )
            except (TypeError, ValueError):
                # Not an int where one belongs: the encoder's own rule decides.
                digest = event_digest(
                    prev,
                    position,
                    sid,
                    xid,
                    seq,
                    kind,
                    recorded_at_ns,
                    offset_ns,
                    sse_event,
                    sse_type,
                    sequence_number,
                    rid,
                    meta_json,
                    payload,
                )
            append_row(
                (
                    position,
                    stream[0],
                    stream[1],
                    seq,
                    kind_key,
                    recorded_at_ns,
                    offset_ns,
                    frame[0],
                    frame[1],
                    sequence_number,
                    tail[0],
                    None if item is None else item_keys.get(item) or key(conn, "items", item),
                    tail[2],
                    stored_codec,
                    stored,
                    hash_format,
                    digest,
                )
            )
            prev = digest.hex()
        self._insert(conn, values)
        return list(range(first, position + 1))

    def _stream_keys(
        self, conn: sa.Connection, sid: str, xid: str | None
    ) -> tuple[int, int | None, str]:
        """Session and exchange keys of a stream, and their hash header text (SQLite)."""
        keys = self._keys
        key = keys.key
        session_key = keys.ids["sessions"].get(sid) or key(conn, "sessions", sid)
        exchange_key = (
            None
            if xid is None
            else keys.ids["exchanges"].get(xid) or key(conn, "exchanges", xid, session_key)
        )
        return session_key, exchange_key, text_or(texts, sid, xid)

    def _insert(self, conn: sa.Connection, values: list[Any]) -> None:
        """Insert the lean rows whose values, row after row, are ``values`` (SQLite)."""
        # Multi-row INSERTs rather than executemany (PostgreSQL COPYs, see
        # _append_pg). The driver releases the GIL around every statement
        # step, i.e. per row with executemany; the writer thread then contends
        # for the GIL with the client's thread hundreds of times per batch,
        # and each handoff costs both threads far more than the row. One step
        # per _ROWS_PER_INSERT rows keeps the handoffs rare (and binds in one
        # C loop). The rest goes in parts of _ROWS_PER_SMALL_INSERT, then one
        # smaller part: few distinct statements, so the driver's statement
        # cache (each prepared statement sized by its parameters) stays small
        # whatever the batches. The statements go to the driver's cursor,
        # past SQLAlchemy's per-statement work (result setup, events: tens of
        # microseconds, per 25 rows in a small batch); its errors are wrapped
        # as SQLAlchemy's own, so translate_errors and the busy retry see them.
        width = len(LEAN_COLUMNS)
        cursor = conn.connection.cursor()
        start, count = 0, len(values) // width
        try:
            for size in (_ROWS_PER_INSERT, _ROWS_PER_SMALL_INSERT):
                while count - start >= size:
                    part = values[start * width : (start + size) * width]
                    cursor.execute(self._multi_insert_sql(size), part)
                    start += size
            if start < count:
                cursor.execute(self._multi_insert_sql(count - start), values[start * width :])
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(self._insert_sql, None, exc, sqlite3.Error) from exc
        finally:
            cursor.close()

    def _multi_insert_sql(self, count: int) -> str:
        sql = self._multi_sql.get(count)
        if sql is None:
            sql = self._multi_sql[count] = self._insert_sql + (", " + self._values) * (count - 1)
        return sql

"""The PostgreSQL append: little under the lock, rows sent in one COPY.

Guarantees:

* **Little under the lock.** An append compresses, finds or makes keys (see
  :mod:`recorder.store.keys`), makes each stream's hash header texts once
  and builds each row's COPY tuple (:mod:`recorder.store.pgcopy`) before it
  takes the lock; under it, the head, the hooks, one hash per row and one
  ``COPY``. The hash is the one :func:`~recorder.store.hashing.event_digest`
  gives.
* **Serialised, ordered commits.** Every append takes :data:`APPEND_LOCK`, a
  transaction-level advisory lock, so positions are assigned and committed in
  order. While an append waits for it (or for the key lock), its
  :class:`~recorder.store.append_common.LockWaits` says so.
* **A dead pooled connection is not an error.** When an append's first round
  trip finds its connection dead, nothing was committed: the pool is
  dropped and the append goes again, once, on a new connection.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recorder.events import Event, canonical_json
from recorder.store.append_common import (
    Batch,
    LockWaits,
    next_seqs,
    seq_of,
    text_or,
)
from recorder.store.codec import encode_all
from recorder.store.engine import translate_errors
from recorder.store.hashing import GENESIS, HASH_FORMAT, event_digest, row_digest, text, texts
from recorder.store.keys import KEYS_LOCK, Caches, Keys, Overlay
from recorder.store.pgcopy import client_encoding, copy_rows, row_body, shape_fields
from recorder.store.pgcopy import row as copy_row
from recorder.store.pgwire import begin_locked

__all__ = ["APPEND_LOCK", "PgAppender"]

# The PostgreSQL advisory lock key every append takes ("codetape" in ASCII).
# An advisory lock, not LOCK TABLE: PostgreSQL lets only roles that may UPDATE,
# DELETE or TRUNCATE a table lock it in EXCLUSIVE mode, and a recording role
# must be able to append with INSERT alone (see recorder.store.roles). It is
# held until commit, like a table lock, so commits stay in position order.
APPEND_LOCK = int.from_bytes(b"codetape", "big")
_LOCK_KEYS = f"SELECT pg_advisory_xact_lock({KEYS_LOCK})"
# What the events of one stream share in their hash header, as JSON texts
# (see hashing.row_digest; "" where a value has no such text): ids, kind,
# names and tail, then the kind and meta JSON event_digest needs without them.
_Shape = tuple[str, str, str, str, str, str]
# What an append computes for an event before the write lock, on PostgreSQL:
# its stream's header texts, and its COPY tuple between seq and hash.
_Staged = tuple[_Shape, bytes]


def _chained(
    items: list[Event], staged: list[_Staged], position: int, prev: str, next_seq: dict[str, int]
) -> Iterator[bytes]:
    """The COPY tuples of ``items`` after the row at ``position`` with hash ``prev``."""
    for ev, (shape, body) in zip(items, staged, strict=True):
        position += 1
        seq = seq_of(ev, next_seq)
        digest = _shaped_digest(prev, position, seq, ev, shape)
        yield copy_row(position, seq, body, digest)
        prev = digest.hex()


def _shaped_digest(prev: str, position: int, seq: int, ev: Event, shape: _Shape) -> bytes:
    """``ev``'s hash after ``prev``, its stream's header texts made once (``shape``)."""
    ids, kind_text, names, tail, kind, meta_json = shape
    payload = ev.payload
    if ids and kind_text and names and tail:
        try:
            return row_digest(
                prev,
                position,
                ids,
                seq,
                kind_text,
                ev.recorded_at_ns,
                ev.offset_ns,
                names,
                ev.sequence_number,
                tail,
                payload,
            )
        except (TypeError, ValueError):
            pass  # not an int where one belongs: the encoder's own rule decides
    return event_digest(
        prev,
        position,
        ev.session_id,
        ev.exchange_id,
        seq,
        kind,
        ev.recorded_at_ns,
        ev.offset_ns,
        ev.sse_event,
        ev.sse_type,
        ev.sequence_number,
        ev.response_id,
        meta_json,
        payload,
    )


class _StaleConnection(Exception):
    """An append's first round trip found its pooled connection dead: go again."""


class PgAppender:
    """Appends to one PostgreSQL database, its keys cached in ``keys``."""

    def __init__(self, url: str, keys: Keys, waits: LockWaits) -> None:
        self.url = url
        self._keys = keys
        self._waits = waits
        self.seen_position = 0
        """A position seen holding a row: the head is looked for from there
        (see :func:`~recorder.store.pgwire.begin_locked`); 0: none yet."""

    def append(self, engine: Engine, batch: Batch) -> list[int]:
        """Append ``batch`` on a connection of ``engine``; their positions.

        All but the chain is done before the lock: rows are compressed, their
        keys found (new ones made in a short transaction of their own, see
        :mod:`recorder.store.keys`), their hash headers and COPY tuples built
        while other writers hold the lock.
        Under it: the head, the hooks, the chain (one hash per row) and one
        COPY. The hooks may change the batch: events they add are built
        there, under the lock. Round trips: ``BEGIN``, the lock and the
        head in one (:func:`~recorder.store.pgwire.begin_locked`), the COPY
        in two, the ``COMMIT``; a transaction for new keys takes at least
        three more (``BEGIN`` and the key lock, the look-ups, the ``COMMIT``).
        """
        try:
            return self._append_once(engine, batch, retry=True)
        except _StaleConnection:
            # The append engine does not ping connections at checkout: its
            # first round trip found the pooled connection dead (a server
            # restart, a terminated backend) before anything of the append
            # was committed. The pool's other connections are as old: go
            # again on a new one, as a ping at checkout would have.
            self._keys.forget()
            engine.dispose()
            return self._append_once(engine, batch, retry=False)

    def _append_once(self, engine: Engine, batch: Batch, *, retry: bool) -> list[int]:
        items, codec = batch.items, batch.codec
        given = tuple(items)
        made: Overlay | None = None
        with translate_errors(self.url), engine.connect() as conn:
            try:
                staged = self._stage(conn, items, codec)
                transaction = conn.begin()
                # Waits too while another transaction locks the table itself.
                last = begin_locked(
                    conn, APPEND_LOCK, head=True, since=self.seen_position, waits=self._waits
                )
            except sa.exc.DBAPIError as exc:
                if retry and exc.connection_invalidated:
                    raise _StaleConnection from exc
                raise
            # Leaving the block commits through SQLAlchemy, whose commit
            # event (a Ctrl-C waits for the commit, see recorder.cli) fires.
            with transaction:
                items = batch.hooked(conn, last)
                if not items:
                    return []  # leaving the block commits what the hooks wrote
                if len(items) != len(given) or not all(map(operator.is_, items, given)):
                    made = Keys.overlay(self._keys.ids)
                    staged = self._restage(conn, given, staged, items, codec, made)
                position, prev = (last[0], last[1].hex()) if last is not None else (0, GENESIS)
                next_seq = next_seqs(conn, items)
                # Rows are chained as the COPY sends them: the server stores
                # the first while the rest are hashed.
                copy_rows(conn, _chained(items, staged, position, prev, next_seq))
        if made is not None:
            Keys.adopt(self._keys.ids, made)  # committed: others may use them now
        self.seen_position = position + len(items)
        return list(range(position + 1, position + 1 + len(items)))

    def _restage(
        self,
        conn: sa.Connection,
        given: tuple[Event, ...],
        staged: list[_Staged],
        items: list[Event],
        codec: int | None,
        made: Overlay,
    ) -> list[_Staged]:
        """``staged`` for the batch the hooks returned: events they made are staged now,
        their new keys made in the append's transaction, into ``made``."""
        # The given events are alive (``given``), so no other object has their id.
        at = {id(ev): i for i, ev in enumerate(given)}
        fresh = [ev for ev in items if id(ev) not in at]
        new = iter(self._stage(conn, fresh, codec, made))
        return [staged[at[id(ev)]] if id(ev) in at else next(new) for ev in items]

    def _stage(
        self,
        conn: sa.Connection,
        items: list[Event],
        codec: int | None,
        made: Overlay | None = None,
    ) -> list[_Staged]:
        """Each event's stream header texts and COPY row body (see :mod:`.pgcopy`).

        Missing keys are made in their own transaction under the key lock
        and cached once it has committed, or, given ``made`` (an overlay of
        the caches, see :meth:`Keys.overlay`), in the append's transaction,
        into ``made``, for the caller to adopt once that one has committed.
        What the events of one stream share (keys, header texts, the COPY
        fields of its keys) is made once per batch, as on SQLite.
        """
        if not items:
            return []
        # One generation of the key caches for the whole stage: a failing
        # append in another thread replaces them (Keys.forget) meanwhile.
        ids: Caches = self._keys.ids if made is None else made
        sessions, exchanges = ids["sessions"], ids["exchanges"]
        responses, names = ids["responses"], ids["names"]
        item_keys = ids["items"]
        wanted: dict[str, dict[str, str]] = {}
        encoding = client_encoding(conn)
        encoded = []
        checked: set[tuple[str, str | None, str, str | None, str | None, str | None]] = set()
        # Compressed before the loop, in one call (see codec.encode_all).
        stored_all = encode_all([ev.payload for ev in items], [ev.sse_event for ev in items], codec)
        for ev, (stored_codec, stored, item) in zip(items, stored_all, strict=True):
            meta = ev.meta
            # Most events (every SSE frame) have no meta: skip the encoder.
            meta_json = canonical_json(dict(meta)) if meta else "{}"
            kind = ev.kind._value_  # what .value returns, minus its descriptor
            encoded.append((kind, meta_json, stored_codec, stored, item))
            if item is not None and item not in item_keys:
                wanted.setdefault("items", {})[item] = ""
            sid, xid, rid = ev.session_id, ev.exchange_id, ev.response_id
            sse_event, sse_type = ev.sse_event, ev.sse_type
            stream = (sid, xid, kind, sse_event, sse_type, rid)
            if stream in checked:
                continue
            checked.add(stream)
            if sid not in sessions:
                wanted.setdefault("sessions", {})[sid] = ""
            if xid is not None and xid not in exchanges:
                wanted.setdefault("exchanges", {}).setdefault(xid, sid)
            for name in (kind, sse_event, sse_type):
                if name is not None and name not in names:
                    wanted.setdefault("names", {})[name] = ""
            if rid is not None and rid not in responses:
                wanted.setdefault("responses", {})[rid] = ""
        if HASH_FORMAT not in names:
            wanted.setdefault("names", {})[HASH_FORMAT] = ""
        if wanted:
            if made is not None:
                conn.exec_driver_sql(_LOCK_KEYS)
                self._make_keys(conn, wanted, made)
            else:
                view = Keys.overlay(ids)
                # The key lock, and the log's (the key tables' insert trigger
                # reads its head), are waited for while others hold them.
                with conn.begin():
                    begin_locked(conn, KEYS_LOCK, head=False, waits=self._waits)
                    self._make_keys(conn, wanted, view)
                Keys.adopt(ids, view)
        hash_format = names[HASH_FORMAT]
        shapes: dict[tuple[Any, ...], tuple[_Shape, bytes]] = {}
        result: list[_Staged] = []
        add = result.append
        for ev, (kind, meta_json, stored_codec, stored, item) in zip(items, encoded, strict=True):
            sid, xid, rid = ev.session_id, ev.exchange_id, ev.response_id
            sse_event, sse_type = ev.sse_event, ev.sse_type
            found = (sid, xid, kind, sse_event, sse_type, rid, meta_json)
            try:
                shape, shared = shapes[found]
            except KeyError:
                shape = (
                    text_or(texts, sid, xid),
                    text_or(text, kind),
                    text_or(texts, sse_event, sse_type),
                    text_or(texts, rid, meta_json),
                    kind,
                    meta_json,
                )
                shared = shape_fields(
                    sessions[sid],
                    None if xid is None else exchanges[xid],
                    None if sse_event is None else names[sse_event],
                    None if sse_type is None else names[sse_type],
                    None if rid is None else responses[rid],
                    names[kind],
                    hash_format,
                )
                shapes[found] = shape, shared
            body = row_body(
                ev.recorded_at_ns,
                ev.offset_ns,
                ev.sequence_number,
                None if item is None else item_keys[item],
                stored_codec,
                None if meta_json == "{}" else meta_json.encode(encoding),
                stored,
                shared,
            )
            add((shape, body))
        return result

    def _make_keys(
        self, conn: sa.Connection, wanted: dict[str, dict[str, str]], ids: Caches
    ) -> None:
        """Keys for ``wanted`` (table -> value -> a new exchange's session id) into ``ids``.

        The key lock is held. ``ids``: the caches the stage took (see :meth:`Keys.forget`).
        """
        keys = self._keys
        for table in ("sessions", "names", "responses", "items"):
            if table in wanted:
                keys.resolve(conn, table, dict.fromkeys(wanted[table], 0), ids)
        if "exchanges" in wanted:
            sessions = ids["sessions"]
            keys.resolve(
                conn,
                "exchanges",
                {xid: sessions[sid] for xid, sid in wanted["exchanges"].items()},
                ids,
            )

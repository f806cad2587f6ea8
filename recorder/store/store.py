"""The event store: one API over SQLite and PostgreSQL.

Guarantees:

* **Append-only.** The only write is :meth:`EventStore.append`; the database
  itself refuses UPDATE and DELETE on ``events`` and its key tables, and any
  INSERT that would replace an event or take its place in its stream
  (triggers, see migrations).
* **Lean rows, same events.** An append stores each event as the lean row
  of :mod:`recorder.store.schema` (keys, binary hash, payload compressed by
  :mod:`recorder.store.codec`); every read gives back the event exactly as
  appended, with its hex hash and its predecessor's, whatever the storage.
* **Atomic batches.** An append of many events commits all of them or none.
* **Serialised appends, ordered commits.** Appends take the log's write lock
  (``BEGIN IMMEDIATE`` on SQLite, a transaction-level advisory lock on
  PostgreSQL, :data:`APPEND_LOCK`), so positions are assigned and committed in
  order: a reader that has seen position N never later finds a new row below
  N. That makes "read from position onward" safe for projections, and lets
  one hash chain run over the whole log.
* **Little under the lock (PostgreSQL).** An append compresses, finds or
  makes keys (see :mod:`recorder.store.keys`), makes each stream's hash
  header texts once and builds each row's COPY tuple
  (:mod:`recorder.store.pgcopy`) before it takes the lock; under it, the
  head, the hooks, one hash per row and one ``COPY``.
  The hash is the one :func:`~recorder.store.hashing.event_digest` gives.
  While it waits for the lock, :meth:`EventStore.lock_wait_since` says so.
* **Waiting for the lock, fairly.** PostgreSQL queues lock requests in order.
  SQLite has no queue: its own wait polls only every 100 ms after a while, so
  a writer between another's short transactions could wait for a whole long
  import. An append therefore tries for the lock every few milliseconds (a
  connection with a 20 ms busy timeout, retried) until the database's busy
  timeout has passed, then fails with :class:`~recorder.errors.StoreBusy`.
* **Streaming reads.** Readers page through by position (keyset pagination), so
  no read loads the whole table (see :mod:`recorder.store.event_read`).
* **Checks under the lock.** An append may be given a ``prepare`` hook, and a
  store a ``guard``: both run inside the append's transaction once the write
  lock is held, so what they read and decide (a lease still held, a session
  still open) cannot change before the batch commits. Their ``on_commit``
  callbacks run only once it has.
"""

from __future__ import annotations

import contextlib
import operator
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recorder.config import is_default, resolve_url
from recorder.errors import NotUpgraded, StoreBusy
from recorder.events import Event, StoredEvent, canonical_json
from recorder.store.codec import DEFAULT_CODEC, encoder
from recorder.store.engine import (
    create_engine,
    describe_url,
    is_process_local,
    sqlite_busy_timeout,
    translate_errors,
)
from recorder.store.event_read import (
    PAGE,
    ExchangeInfo,
    exchange_events,
    exchanges_of,
    find_session,
    hashes,
    paged,
)
from recorder.store.forkgate import driver_call
from recorder.store.hashing import (
    GENESIS,
    HASH_FORMAT,
    event_digest,
    row_digest,
    text,
    texts,
)
from recorder.store.keys import KEYS_LOCK, Keys
from recorder.store.listing import SessionInfo, sessions_from
from recorder.store.pgcopy import client_encoding, copy_rows, row_body, shape_fields
from recorder.store.pgcopy import row as copy_row
from recorder.store.pgwire import HEAD, begin_locked
from recorder.store.schema import SCHEMA_REVISION
from recorder.store.verify import ChainChecker, VerifyProblem, VerifyReport

__all__ = [
    "APPEND_LOCK",
    "Committed",
    "EventStore",
    "ExchangeInfo",
    "Prepare",
    "SessionInfo",
    "VerifyProblem",
    "VerifyReport",
]

Committed = Callable[[list[int]], None]
# What the events of one stream share in their hash header, as JSON texts
# (see hashing.row_digest; "" where a value has no such text): ids, kind,
# names and tail, then the kind and meta JSON event_digest needs without them.
_Shape = tuple[str, str, str, str, str, str]
# What an append computes for an event before the write lock, on PostgreSQL:
# its stream's header texts, and its COPY tuple between seq and hash.
_Staged = tuple[_Shape, bytes]
Prepare = Callable[[sa.Connection, list[Event], int], tuple[list[Event], Committed | None]]
"""A hook run inside an append's transaction, under the write lock.

It gets the connection, the batch and the log's last position before the
batch, and returns the batch to append (the same, changed, or empty) and a
callback to run, with the positions given to the batch, once the transaction
has committed (or None). It may read and write other tables on the
connection, never ``events`` itself (it returns events to append instead).
"""

# What an append writes: the lean row.
_LEAN_COLUMNS = (
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
# The PostgreSQL advisory lock key every append takes ("codetape" in ASCII).
# An advisory lock, not LOCK TABLE: PostgreSQL lets only roles that may UPDATE,
# DELETE or TRUNCATE a table lock it in EXCLUSIVE mode, and a recording role
# must be able to append with INSERT alone (see recorder.store.roles). It is
# held until commit, like a table lock, so commits stay in position order.
APPEND_LOCK = int.from_bytes(b"codetape", "big")
_LOCK_KEYS = f"SELECT pg_advisory_xact_lock({KEYS_LOCK})"
_HEAD = HEAD  # the SQLite append reads it too
# Rows per multi-row INSERT on SQLite: 250 x 17 columns stays under 32,766,
# the bound-parameter limit since SQLite 3.32 (50 x 17 under 999 before it).
# Few statements per batch matter: the driver releases the GIL around each.
_ROWS_PER_INSERT = 250 if sqlite3.sqlite_version_info >= (3, 32, 0) else 50
_ROWS_PER_SMALL_INSERT = 25
# SQLite: one try for the write lock waits this long (see the module docstring).
_LOCK_POLL = 0.02


def _seq_of(ev: Event, next_seq: dict[str, int]) -> int:
    """The seq ``ev`` is appended with: its own, else its stream's next in ``next_seq``.

    ``next_seq`` (see :meth:`EventStore._next_seqs`; empty when every event
    of the batch brings its seq) moves past the seq given.
    """
    seq = ev.seq
    if seq is None:
        seq = next_seq[ev.stream_id]
        next_seq[ev.stream_id] = seq + 1
    elif next_seq:
        next_seq[ev.stream_id] = seq + 1
    return seq


def _chained(
    items: list[Event], staged: list[_Staged], position: int, prev: str, next_seq: dict[str, int]
) -> Iterator[bytes]:
    """The COPY tuples of ``items`` after the row at ``position`` with hash ``prev``."""
    for ev, (shape, body) in zip(items, staged, strict=True):
        position += 1
        seq = _seq_of(ev, next_seq)
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


def _text_or(make: Callable[..., str], *values: Any) -> str:
    """``make(*values)``, or "" when a value is not a str or None (see hashing.texts)."""
    try:
        return make(*values)
    except TypeError:
        return ""


class EventStore:
    """The append-only, hash-chained log of events."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.backend = engine.dialect.name
        self._values = "(" + ", ".join(["?"] * len(_LEAN_COLUMNS)) + ")"
        self._insert_sql = (
            "INSERT INTO events (" + ", ".join(_LEAN_COLUMNS) + ") VALUES " + self._values
        )
        self._keys = Keys()
        # A position this store saw holding a row (PostgreSQL appends look for
        # the head from there, see pgwire.begin_locked); 0: none yet.
        self._seen_position = 0
        self.codec: int | None = DEFAULT_CODEC
        """The dictionary new payloads are compressed against; None stores them raw."""
        self._multi_sql: dict[int, str] = {}
        self._write_engine: Engine | None = None
        self._busy_timeout: float | None = None
        self.guard: Prepare | None = None
        """Run on every non-empty append (see :data:`Prepare`); set by :mod:`recorder.lease`."""
        self._lock_waits: dict[int, float] = {}

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, url: str | None = None, *, upgrade: bool | None = None) -> EventStore:
        """Open the store at ``url`` (resolved like ``--db``), checking its schema.

        The embedded default database is created and upgraded on first use;
        any other database must have been upgraded with ``codetape db upgrade``
        (``upgrade=True`` forces the upgrade here).
        """
        resolved = resolve_url(url)
        if upgrade is None:
            upgrade = is_default(resolved)
        if upgrade:
            from recorder.store.migrate import upgrade as run_upgrade

            run_upgrade(resolved)
        engine = create_engine(resolved)
        store = cls(engine, resolved)
        try:
            store.check_schema()
        except BaseException:
            engine.dispose()
            raise
        return store

    def check_schema(self) -> None:
        """Raise unless the database is at this code's revision.

        :class:`NotUpgraded` for a blank or older schema (with the command that
        fixes it), :class:`NewerSchema` for one written by a newer codetape.
        """
        where = describe_url(self.url)
        with translate_errors(self.url), self.engine.connect() as conn:
            version = None
            if sa.inspect(conn).has_table("alembic_version"):
                version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        if version == SCHEMA_REVISION:
            return
        if is_process_local(self.url):
            raise NotUpgraded(
                f"the in-memory database {where} starts blank in every process, so "
                "`codetape db upgrade` cannot prepare it: use a file (sqlite:///PATH) or "
                "PostgreSQL, or open it with EventStore.open(url, upgrade=True)"
            )
        from recorder.store import migrate

        hint = f"run `codetape db upgrade --db {where}`"
        if version is None:
            raise NotUpgraded(f"the database at {where} has no codetape schema: {hint}")
        if migrate.revision_state(version, SCHEMA_REVISION) == "newer":
            raise migrate.newer_schema(self.url, version)
        raise NotUpgraded(
            f"the database at {where} is at schema revision {version}, "
            f"this codetape needs {SCHEMA_REVISION}: {hint}"
        )

    def close(self) -> None:
        self.engine.dispose()
        if self._write_engine is not None and self._write_engine is not self.engine:
            self._write_engine.dispose()

    def forked(self) -> None:
        """In a forked child: drop the parent's pooled connections (unclosed) to open our own."""
        self.engine.dispose(close=False)
        if self._write_engine is not None and self._write_engine is not self.engine:
            self._write_engine.dispose(close=False)

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------

    def append(self, batch: Iterable[Event], *, prepare: Prepare | None = None) -> list[int]:
        """Append ``batch`` atomically; return the positions given to its events.

        Events with ``seq=None`` get the next sequence number of their stream.
        The store's :attr:`guard`, then ``prepare``, may check and rewrite the
        batch under the write lock (see :data:`Prepare`).
        """
        items = list(batch)
        if not items and prepare is None:
            return []
        committed: list[Committed] = []
        positions = self._append_waiting(items, prepare, committed)
        for on_commit in committed:
            on_commit(positions)
        return positions

    def lock_wait_since(self, thread_id: int | None) -> float | None:
        """Since when (``time.monotonic()``) the append running in thread ``thread_id``
        has been waiting for the log's write lock (PostgreSQL), or None if it is not.

        Lets the group-commit writer tell a commit held up by another
        transaction's lock (a delay: its producer need not wait for it) from
        a slow one, without waiting for its ``stall_after``.
        """
        return None if thread_id is None else self._lock_waits.get(thread_id)

    @contextlib.contextmanager
    def _waiting_for_locks(self) -> Iterator[None]:
        """Marks this thread as waiting for locks, for :meth:`lock_wait_since`."""
        waits, me = self._lock_waits, threading.get_ident()
        waits[me] = time.monotonic()
        try:
            yield
        finally:
            del waits[me]

    def _append_waiting(
        self, items: list[Event], prepare: Prepare | None, committed: list[Committed]
    ) -> list[int]:
        """:meth:`_append`; on SQLite, tried again for the write lock until the busy timeout."""
        if self.backend != "sqlite":
            with driver_call():
                return self._append_keyed(items, prepare, committed)
        if self._busy_timeout is None:
            self._busy_timeout = sqlite_busy_timeout(self.url)
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                with driver_call():  # each attempt, so a fork never waits out a lock wait
                    return self._append_keyed(items, prepare, committed)
            except StoreBusy:
                committed.clear()  # nothing was committed: the hooks' notes are void
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.001)

    def _append_keyed(
        self, items: list[Event], prepare: Prepare | None, committed: list[Committed]
    ) -> list[int]:
        try:
            return self._append(items, prepare, committed)
        except BaseException:
            self._keys.forget()  # keys this transaction added were rolled back
            raise

    def _append(
        self, items: list[Event], prepare: Prepare | None, committed: list[Committed]
    ) -> list[int]:
        if self.backend == "postgresql":
            return self._append_pg(items, prepare, committed)
        with translate_errors(self.url), self._write_connection() as conn, conn.begin():
            last = conn.exec_driver_sql(_HEAD).first()
            items = self._hooks(conn, items, last, prepare, committed)
            if not items:
                return []  # leaving the block commits what the hooks wrote
            position, prev = (last[0], bytes(last[1]).hex()) if last is not None else (0, GENESIS)
            keys = self._keys
            keys.begin()
            key = keys.key
            responses, names = keys.ids["responses"], keys.ids["names"]
            item_keys = keys.ids["items"]
            hash_format = names.get(HASH_FORMAT) or key(conn, "names", HASH_FORMAT)
            next_seq = self._next_seqs(conn, items)
            first = position + 1
            encode_one = encoder(self.codec)
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
            for ev in items:
                position += 1
                seq = _seq_of(ev, next_seq)
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
                        _text_or(text, kind),
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
                        _text_or(texts, sse_event, sse_type),
                    )
                try:
                    tail = tails[rid, meta_json]
                except KeyError:
                    tail = tails[rid, meta_json] = (
                        None if rid is None else responses.get(rid) or key(conn, "responses", rid),
                        _text_or(texts, rid, meta_json),
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
                stored_codec, stored, item = encode_one(payload, sse_event)
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
        return session_key, exchange_key, _text_or(texts, sid, xid)

    def _hooks(
        self,
        conn: sa.Connection,
        items: list[Event],
        last: Sequence[Any] | None,
        prepare: Prepare | None,
        committed: list[Committed],
    ) -> list[Event]:
        """The batch as the guard, then ``prepare``, leave it (under the write lock)."""
        # The guard checks the batch as the caller gave it; prepare, the
        # caller's own check, comes last and is appended as it returns.
        for hook in (self.guard, prepare):
            if hook is not None and (items or hook is prepare):
                items, on_commit = hook(conn, items, 0 if last is None else last[0])
                if on_commit is not None:
                    committed.append(on_commit)
        return items

    def _append_pg(
        self, items: list[Event], prepare: Prepare | None, committed: list[Committed]
    ) -> list[int]:
        """:meth:`_append` on PostgreSQL: all but the chain is done before the lock.

        Rows are compressed, their keys found (new ones made in a short
        transaction of their own, see :mod:`recorder.store.keys`), their hash
        headers and COPY tuples built while other writers hold the lock.
        Under it: the head, the hooks, the chain (one hash per row) and one
        COPY. The hooks may change the batch: events they add are built
        there, under the lock. Round trips: ``BEGIN``, the lock and the
        head in one (:func:`~recorder.store.pgwire.begin_locked`), the COPY
        in two, the ``COMMIT``; a transaction for new keys takes at least
        three more (``BEGIN`` and the key lock, the look-ups, the ``COMMIT``).
        """
        try:
            return self._append_pg_once(items, prepare, committed, retry=True)
        except _StaleConnection:
            # The append engine does not ping connections at checkout: its
            # first round trip found the pooled connection dead (a server
            # restart, a terminated backend) before anything of the append
            # was committed. The pool's other connections are as old: go
            # again on a new one, as a ping at checkout would have.
            self._keys.forget()
            self.write_engine.dispose()
            return self._append_pg_once(items, prepare, committed, retry=False)

    def _append_pg_once(
        self,
        items: list[Event],
        prepare: Prepare | None,
        committed: list[Committed],
        *,
        retry: bool,
    ) -> list[int]:
        given = tuple(items)
        with translate_errors(self.url), self.write_engine.connect() as conn:
            try:
                staged = self._stage(conn, items, locked=False)
                transaction = conn.begin()
                with self._waiting_for_locks():
                    # Blocks too while another transaction locks the table itself.
                    last = begin_locked(conn, APPEND_LOCK, head=True, since=self._seen_position)
            except sa.exc.DBAPIError as exc:
                if retry and exc.connection_invalidated:
                    raise _StaleConnection from exc
                raise
            # Leaving the block commits through SQLAlchemy, whose commit
            # event (a Ctrl-C waits for the commit, see recorder.cli) fires.
            with transaction:
                items = self._hooks(conn, items, last, prepare, committed)
                if not items:
                    return []  # leaving the block commits what the hooks wrote
                if len(items) != len(given) or not all(map(operator.is_, items, given)):
                    staged = self._restage(conn, given, staged, items)
                position, prev = (last[0], last[1].hex()) if last is not None else (0, GENESIS)
                next_seq = self._next_seqs(conn, items)
                # Rows are chained as the COPY sends them: the server stores
                # the first while the rest are hashed.
                copy_rows(conn, _chained(items, staged, position, prev, next_seq))
        self._seen_position = position + len(items)
        return list(range(position + 1, position + 1 + len(items)))

    def _restage(
        self,
        conn: sa.Connection,
        given: tuple[Event, ...],
        staged: list[_Staged],
        items: list[Event],
    ) -> list[_Staged]:
        """``staged`` for the batch the hooks returned: events they made are staged now."""
        # The given events are alive (``given``), so no other object has their id.
        at = {id(ev): i for i, ev in enumerate(given)}
        fresh = [ev for ev in items if id(ev) not in at]
        made = iter(self._stage(conn, fresh, locked=True))
        return [staged[at[id(ev)]] if id(ev) in at else next(made) for ev in items]

    def _stage(self, conn: sa.Connection, items: list[Event], *, locked: bool) -> list[_Staged]:
        """Each event's stream header texts and COPY row body (see :mod:`.pgcopy`).

        Missing keys are made in their own transaction under the key lock,
        or, when ``locked`` (inside the append's transaction), in that one.
        What the events of one stream share (keys, header texts, the COPY
        fields of its keys) is made once per batch, as on SQLite.
        """
        if not items:
            return []
        keys = self._keys
        sessions, exchanges = keys.ids["sessions"], keys.ids["exchanges"]
        responses, names = keys.ids["responses"], keys.ids["names"]
        item_keys = keys.ids["items"]
        wanted: dict[str, dict[str, str]] = {}
        encode_one = encoder(self.codec)
        encoding = client_encoding(conn)
        encoded = []
        checked: set[tuple[str, str | None, str, str | None, str | None, str | None]] = set()
        for ev in items:
            meta = ev.meta
            # Most events (every SSE frame) have no meta: skip the encoder.
            meta_json = canonical_json(dict(meta)) if meta else "{}"
            kind = ev.kind._value_  # what .value returns, minus its descriptor
            stored_codec, stored, item = encode_one(ev.payload, ev.sse_event)
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
            if locked:
                conn.exec_driver_sql(_LOCK_KEYS)
                self._make_keys(conn, wanted)
            else:
                # The key lock, and the key tables' insert trigger reading the
                # log's head, wait too while another transaction locks the log.
                with conn.begin(), self._waiting_for_locks():
                    begin_locked(conn, KEYS_LOCK, head=False)
                    self._make_keys(conn, wanted)
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
                    _text_or(texts, sid, xid),
                    _text_or(text, kind),
                    _text_or(texts, sse_event, sse_type),
                    _text_or(texts, rid, meta_json),
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

    def _make_keys(self, conn: sa.Connection, wanted: dict[str, dict[str, str]]) -> None:
        """Keys for ``wanted`` (table -> value -> a new exchange's session id), key lock held."""
        keys = self._keys
        for table in ("sessions", "names", "responses", "items"):
            if table in wanted:
                keys.resolve(conn, table, dict.fromkeys(wanted[table], 0))
        if "exchanges" in wanted:
            sessions = keys.ids["sessions"]
            keys.resolve(
                conn,
                "exchanges",
                {xid: sessions[sid] for xid, sid in wanted["exchanges"].items()},
            )

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
        width = len(_LEAN_COLUMNS)
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

    @property
    def write_engine(self) -> Engine:
        """The engine appends use, with connections of their own: on a SQLite
        file, lock waits are short (see the module docstring); on PostgreSQL,
        an append sends its own ``BEGIN`` (see :mod:`recorder.store.pgwire`).
        In-memory SQLite has one database per connection: :attr:`engine`."""
        if self._write_engine is not None:
            return self._write_engine
        # Decided once: parsing the URL on every append costs more than its statements.
        if is_process_local(self.url):
            self._write_engine = self.engine
            return self.engine
        if self.backend == "sqlite":
            self._write_engine = create_engine(self.url, busy_timeout=_LOCK_POLL)
        else:
            self._write_engine = create_engine(self.url, pg_appends=True)
        # A store dropped unclosed (one made over another's engine) still
        # closes the connections of the engine it made.
        weakref.finalize(self, self._write_engine.dispose)
        return self._write_engine

    def _write_connection(self) -> sa.Connection:
        conn = self.write_engine.connect()
        if self.backend == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        return conn

    def _next_seqs(self, conn: sa.Connection, items: list[Event]) -> dict[str, int]:
        """Next free seq for each stream that has an event asking for one."""
        wanted = {ev.stream_id: ev for ev in items if ev.seq is None}
        result: dict[str, int] = {}
        for stream_id, ev in wanted.items():
            if ev.exchange_id is not None:
                query = (
                    "SELECT max(e.seq) FROM events e JOIN exchanges x ON x.id = e.exchange_key "
                    "WHERE x.public_id = :s AND e.exchange_key IS NOT NULL"
                )
            else:
                query = (
                    "SELECT max(e.seq) FROM events e JOIN sessions s ON s.id = e.session_key "
                    "WHERE s.public_id = :s AND e.exchange_key IS NULL"
                )
            current = conn.execute(sa.text(query), {"s": stream_id}).scalar()
            result[stream_id] = 0 if current is None else int(current) + 1
        return result

    # -- reading -------------------------------------------------------------

    def last_position(self) -> int:
        with translate_errors(self.url), self.engine.connect() as conn:
            value = conn.exec_driver_sql("SELECT max(position) FROM events").scalar()
        return int(value or 0)

    def iter_events(
        self,
        after: int = 0,
        *,
        until: int | None = None,
        page: int = PAGE,
        damage: dict[int, str] | None = None,
    ) -> Iterator[StoredEvent]:
        """Every event with ``after < position <= until``, in position order.

        A payload that does not decode raises :class:`StoreError` naming its
        position, unless ``damage`` is given: then the position and what is
        wrong are put there and the event comes with an empty payload.
        """
        if until is None:
            return paged(self.engine, self.url, "", {"after": after}, page, damage)
        where = " AND e.position <= :until"
        return paged(self.engine, self.url, where, {"after": after, "until": until}, page, damage)

    def session_events(self, session_id: str) -> Iterator[StoredEvent]:
        """All events of a session (its own and its exchanges'), in position order."""
        return paged(
            self.engine,
            self.url,
            " AND e.session_key = (SELECT id FROM sessions WHERE public_id = :sid)",
            {"sid": session_id},
        )

    def exchange_events(self, exchange_id: str) -> list[StoredEvent]:
        return exchange_events(self.engine, self.url, exchange_id)

    def sessions(self) -> list[SessionInfo]:
        """Every session, oldest first."""
        with translate_errors(self.url), self.engine.connect() as conn:
            return sessions_from(lambda sql: conn.exec_driver_sql(sql).all())

    def find_session(self, ref: str) -> SessionInfo:
        """The session with id ``ref``, else the one named ``ref``, else a unique id prefix.

        Raises :class:`AmbiguousSession` (listing the candidates) when several
        sessions carry the name, or the prefix, rather than guessing.
        """
        return find_session(self.sessions(), ref, self.url)

    def has_session(self, session_id: str) -> bool:
        with translate_errors(self.url), self.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT 1 FROM event_rows "
                    "WHERE kind = 'session_open' AND session_id = :s LIMIT 1"
                ),
                {"s": session_id},
            ).first()
        return row is not None

    def exchanges(self, session_id: str) -> list[ExchangeInfo]:
        """The session's exchanges in the order their requests were logged."""
        return exchanges_of(session_id, self.session_events(session_id))

    # -- verification --------------------------------------------------------

    def verify(
        self, *, max_problems: int = 20, marks: Iterable[int] = (), until: int | None = None
    ) -> VerifyReport:
        """Re-derive every hash in position order and check the chain, positions and sequences.

        See :mod:`recorder.store.verify` for what this proves and what it cannot;
        ``marks`` asks for the chain head and RFC 6962 root at those positions;
        ``until`` stops after that position.
        """
        from recorder.store.seal import live_start, read_segments

        # Rows archived and dropped: the chain goes on from the seal's head.
        start = live_start(self)
        seals = {s.last: s.head_hash for s in read_segments(self)}
        checker = ChainChecker(max_problems=max_problems, marks=marks, start=start, seals=seals)
        damage: dict[int, str] = {}
        after = 0 if start is None else start.position - 1
        for ev in self.iter_events(after, until=until, damage=damage):
            checker.feed(ev, damage.pop(ev.position, None))
        return checker.finish()

    def iter_hashes(self, until: int, page: int = 20_000) -> Iterator[tuple[int, str]]:
        """(position, hash) of each row up to ``until``, in order: the Merkle tree's leaves."""
        return hashes(self.engine, self.url, until, page)

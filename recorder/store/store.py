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
  The appends themselves are :mod:`recorder.store.append_sqlite` and
  :mod:`recorder.store.append_pg`, what they share
  :mod:`recorder.store.append_common`; reads are :mod:`recorder.store.event_read`.
* **Atomic batches.** An append of many events commits all of them or none.
* **Serialised appends, ordered commits.** Appends take the log's write lock
  (``BEGIN IMMEDIATE`` on SQLite, a transaction-level advisory lock on
  PostgreSQL, :data:`APPEND_LOCK`), so positions are assigned and committed in
  order: a reader that has seen position N never later finds a new row below
  N. That makes "read from position onward" safe for projections, and lets
  one hash chain run over the whole log.
* **Little under the lock (PostgreSQL).** An append does all but the chain
  before it takes the lock; under it, the head, the hooks, one hash per row
  and one ``COPY`` (see :mod:`recorder.store.append_pg`). While it waits for
  the lock, :meth:`EventStore.lock_wait_since` says so.
* **Waiting for the lock, fairly.** PostgreSQL queues lock requests in order.
  SQLite has no queue: its own wait polls only every 100 ms after a while, so
  a writer between another's short transactions could wait for a whole long
  import. An append therefore tries for the lock every few milliseconds (a
  connection with a 20 ms busy timeout, retried) until the database's busy
  timeout has passed, then fails with :class:`~recorder.errors.StoreBusy`.
* **Streaming reads.** Readers page through by position (keyset pagination), so
  no read loads the whole table.
* **Checks under the lock.** An append may be given a ``prepare`` hook, and a
  store a ``guard``: both run inside the append's transaction once the write
  lock is held, so what they read and decide (a lease still held, a session
  still open) cannot change before the batch commits. Their ``on_commit``
  callbacks run only once it has.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recorder.config import is_default, resolve_url
from recorder.errors import NotUpgraded, StoreBusy
from recorder.events import Event, StoredEvent
from recorder.store.append_common import Batch, Committed, LockWaits, Prepare
from recorder.store.append_pg import APPEND_LOCK, PgAppender
from recorder.store.append_sqlite import LEAN_COLUMNS, SqliteAppender
from recorder.store.codec import DEFAULT_CODEC
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
from recorder.store.keys import Keys
from recorder.store.listing import SessionInfo, sessions_from
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

# The lean row's columns, under the name bench/record_parts.py imports.
_LEAN_COLUMNS = LEAN_COLUMNS
# SQLite: one try for the write lock waits this long (see the module docstring).
_LOCK_POLL = 0.02


class EventStore:
    """The append-only, hash-chained log of events."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.backend = engine.dialect.name
        self._keys = Keys()
        self._lock_waits = LockWaits()
        # One appender per backend, both over the same key cache (forgotten
        # together when an append fails, see _append_keyed).
        self._sqlite = SqliteAppender(self._keys)
        self._pg = PgAppender(url, self._keys, self._lock_waits)
        self.codec: int | None = DEFAULT_CODEC
        """The dictionary new payloads are compressed against; None stores them raw."""
        self._write_engine: Engine | None = None
        self._busy_timeout: float | None = None
        self.guard: Prepare | None = None
        """Run on every non-empty append (see :data:`Prepare`); set by :mod:`recorder.lease`."""

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
            versions: list[str] = []
            if sa.inspect(conn).has_table("alembic_version"):
                rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version")
                versions = [str(row[0]) for row in rows]
        if len(versions) > 1:
            from recorder.store import migrate

            raise migrate.several_revisions(self.url)
        version = versions[0] if versions else None
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
        work = Batch(items, self.guard, prepare, self.codec)
        positions = self._append_waiting(work)
        for on_commit in work.committed:
            on_commit(positions)
        return positions

    def lock_wait_since(self, thread_id: int | None) -> float | None:
        """Since when (``time.monotonic()``) the append running in thread ``thread_id``
        has been waiting for a lock another transaction holds (PostgreSQL: the
        server said so, see :mod:`recorder.store.pgwire`), or None if it is not.

        Lets the group-commit writer tell a commit held up by another
        transaction's lock (a delay: its producer need not wait for it) from
        a slow one, without waiting for its ``stall_after``.
        """
        return self._lock_waits.since(thread_id)

    def on_lock_wait(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback``, in the calling thread, whenever one of its appends starts
        waiting for a lock another transaction holds (when :meth:`lock_wait_since`
        starts giving a time for it); None: no more.

        Lets the group-commit writer let its producer go on at once, rather than
        at its next look at the clock.
        """
        self._lock_waits.on_wait(callback)

    def _append_waiting(self, batch: Batch) -> list[int]:
        """:meth:`_append`; on SQLite, tried again for the write lock until the busy timeout."""
        if self.backend != "sqlite":
            with driver_call():
                return self._append_keyed(batch)
        if self._busy_timeout is None:
            self._busy_timeout = sqlite_busy_timeout(self.url)
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                with driver_call():  # each attempt, so a fork never waits out a lock wait
                    return self._append_keyed(batch)
            except StoreBusy:
                batch.committed.clear()  # nothing was committed: the hooks' notes are void
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.001)

    def _append_keyed(self, batch: Batch) -> list[int]:
        try:
            return self._append(batch)
        except BaseException:
            self._keys.forget()  # keys this transaction added were rolled back
            raise

    def _append(self, batch: Batch) -> list[int]:
        if self.backend == "postgresql":
            return self._pg.append(self.write_engine, batch)
        with translate_errors(self.url), self._write_connection() as conn, conn.begin():
            try:
                return self._sqlite.append(conn, batch)
            except BaseException:
                # Before the rollback frees the write lock: the next append to
                # take it must not find keys this transaction made.
                self._keys.forget()
                raise

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
        """Every session, in log order (the order their openings were stored)."""
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

"""The PostgreSQL append's own statements, sent on the driver connection in few round trips.

Guarantees:

* :func:`begin_locked` opens a ``READ COMMITTED`` transaction, takes a
  transaction-level advisory lock and, if asked, reads the log's head, in
  one round trip: one simple-query message, whose statements PostgreSQL
  runs in order, each with a snapshot taken when it starts. So the head is
  read once the lock is granted and sees every append committed before it,
  as if each statement had been sent alone. Whatever the server's default
  isolation level, the transaction is ``READ COMMITTED``: a snapshot taken
  before the lock was granted would miss the appends it waited for.
* **A lock wait is the server's word, not a guess from time.** Given a
  :class:`~recorder.store.append_common.LockWaits`, the locks are first
  asked for with a ``lock_timeout`` of :data:`LOCK_PATIENCE`, in the same
  round trip. Only if the server says a lock was not granted in that time
  (another transaction holds it) does the thread count as waiting, from
  when it first asked, while it asks again without a timeout. A round trip
  that is merely slow (a server short of CPU) is never taken for a wait.
* It needs a driver connection in autocommit mode (the store's append
  engine, :func:`recorder.store.engine.create_engine` with ``pg_appends``),
  so that the driver sends no ``BEGIN`` of its own, a round trip more. The
  transaction it opens ends with the caller's ``COMMIT`` or ``ROLLBACK``
  (SQLAlchemy's commit and rollback send them when the server is in a
  transaction), and every other statement the caller runs meanwhile, through
  SQLAlchemy or not, runs inside it.
* :func:`sqlalchemy_errors`: a driver error raised here comes out as
  SQLAlchemy's, as from ``conn.execute``, so the store's error translation
  (:func:`recorder.store.engine.translate_errors`) applies; a connection
  found dead is invalidated and the error says ``connection_invalidated``.

These statements bypass SQLAlchemy's execution, about a hundred
microseconds of client CPU per statement, and so its cursor events.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from recorder.store.append_common import LockWaits

if TYPE_CHECKING:
    # Only a PostgreSQL store loads the driver (SQLite-only commands start faster).
    import psycopg

__all__ = ["HEAD", "LOCK_PATIENCE", "begin_locked", "driver", "sqlalchemy_errors"]

# A lock not granted in this long is held by another transaction: an
# uncontended lock and head read take a few milliseconds even on a busy
# machine, and appends hold the log's lock for about as long.
LOCK_PATIENCE = 0.05

HEAD = "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
# The head at or after a position known to hold a row: positions only grow,
# so the head is there, and the partitions wholly before it are pruned at
# planning instead of each being probed (their number grows with the log).
_HEAD_SINCE = (
    "SELECT position, hash FROM events WHERE position >= {since} ORDER BY position DESC LIMIT 1"
)
_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
_LOCK = "SELECT pg_advisory_xact_lock({lock})"
# Without the head read, what the caller will read or write still needs the
# log's table lock (the key tables' insert trigger reads the log's head):
# taken here, its wait is seen like the advisory lock's.
_LOG_LOCK = "LOCK TABLE events IN ACCESS SHARE MODE"
_PATIENT = f"SET LOCAL lock_timeout = '{int(LOCK_PATIENCE * 1000)}ms'"
# Back to the server's, role's or connection's setting (SET LOCAL TO DEFAULT ignores only
# session-level SETs, which the store does not make).
_IMPATIENT = "SET LOCAL lock_timeout TO DEFAULT"


def driver(conn: sa.Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under ``conn``."""
    import psycopg

    found = conn.connection.driver_connection
    assert isinstance(found, psycopg.Connection)
    return found


@contextlib.contextmanager
def sqlalchemy_errors(conn: sa.Connection, statement: str) -> Iterator[None]:
    """Raise psycopg's errors from the block as SQLAlchemy would have from ``conn.execute``."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        # The pool's handling of a dead connection then applies as to any
        # other statement: it is not handed out again.
        gone = conn.dialect.is_disconnect(cast(Any, exc), conn.connection.dbapi_connection, None)
        if gone:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            statement,
            None,
            exc,
            psycopg.Error,
            connection_invalidated=gone,
            dialect=conn.dialect,
        ) from exc


def begin_locked(
    conn: sa.Connection,
    lock: int,
    *,
    head: bool,
    since: int = 0,
    waits: LockWaits | None = None,
) -> tuple[int, bytes] | None:
    """Open a transaction holding advisory lock ``lock``; the log's head if ``head``.

    The head is ``(position, hash)`` of the last row, or None for an empty
    log. ``since``: a position the caller saw holding a row (its last
    append's, say), or 0; the head is looked for from there on, and in the
    whole log only if no row is there any more (its partition was dropped).
    Without ``head`` the log's table is locked in ``ACCESS SHARE`` mode
    instead. ``waits``: where this thread is marked as waiting once the
    server says a lock is held elsewhere (see the module's guarantees).
    """
    import psycopg

    if head:
        query = _HEAD_SINCE.format(since=int(since)) if since > 0 else HEAD
        locks = f"{_LOCK.format(lock=int(lock))}; {query}"
    else:
        locks = f"{_LOCK.format(lock=int(lock))}; {_LOG_LOCK}"
    pg = driver(conn)
    # Not in autocommit mode, the driver would send a BEGIN of its own first.
    assert pg.autocommit, "begin_locked needs the append engine's connections"
    if waits is None:
        return _run(conn, pg, f"{_BEGIN}; {locks}", head, since, skip=2)
    asked = time.monotonic()
    try:
        return _run(conn, pg, f"{_BEGIN}; {_PATIENT}; {locks}; {_IMPATIENT}", head, since, skip=3)
    except sa.exc.OperationalError as exc:
        if not isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            raise
    # The failed statement ended the transaction's use: end it, and ask
    # again, waiting as long as it takes (or the server's own lock_timeout).
    with sqlalchemy_errors(conn, "ROLLBACK"), pg.cursor() as cursor:
        cursor.execute("ROLLBACK")
    with waits.waiting(asked):
        return _run(conn, pg, f"{_BEGIN}; {locks}", head, since, skip=2)


def _run(
    conn: sa.Connection,
    pg: psycopg.Connection[Any],
    statement: str,
    head: bool,
    since: int,
    skip: int,
) -> tuple[int, bytes] | None:
    """Send ``statement``; the head from the result after the first ``skip`` if ``head``."""
    with sqlalchemy_errors(conn, statement), pg.cursor() as cursor:
        cursor.execute(statement)
        if not head:
            return None
        for _ in range(skip):
            cursor.nextset()
        row = cursor.fetchone()
        if row is None and since > 0:
            cursor.execute(HEAD)
            row = cursor.fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]))

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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

if TYPE_CHECKING:
    # Only a PostgreSQL store loads the driver (SQLite-only commands start faster).
    import psycopg

__all__ = ["HEAD", "begin_locked", "driver", "sqlalchemy_errors"]

HEAD = "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
# The head at or after a position known to hold a row: positions only grow,
# so the head is there, and the partitions wholly before it are pruned at
# planning instead of each being probed (their number grows with the log).
_HEAD_SINCE = (
    "SELECT position, hash FROM events WHERE position >= {since} ORDER BY position DESC LIMIT 1"
)
_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({lock})"


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
    conn: sa.Connection, lock: int, *, head: bool, since: int = 0
) -> tuple[int, bytes] | None:
    """Open a transaction holding advisory lock ``lock``; the log's head if ``head``.

    The head is ``(position, hash)`` of the last row, or None for an empty
    log. ``since``: a position the caller saw holding a row (its last
    append's, say), or 0; the head is looked for from there on, and in the
    whole log only if no row is there any more (its partition was dropped).
    """
    query = _HEAD_SINCE.format(since=int(since)) if since > 0 else HEAD
    statement = _BEGIN.format(lock=int(lock)) + (f"; {query}" if head else "")
    pg = driver(conn)
    # Not in autocommit mode, the driver would send a BEGIN of its own first.
    assert pg.autocommit, "begin_locked needs the append engine's connections"
    with sqlalchemy_errors(conn, statement), pg.cursor() as cursor:
        cursor.execute(statement)
        if not head:
            return None
        # The results of BEGIN and of the lock, then the head's.
        cursor.nextset()
        cursor.nextset()
        row = cursor.fetchone()
        if row is None and since > 0:
            cursor.execute(HEAD)
            row = cursor.fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]))

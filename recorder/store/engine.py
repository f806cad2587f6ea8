"""Engines for the two backends, and the one place driver errors become ours.

Guarantees: a SQLite engine runs in WAL mode with ``synchronous=NORMAL`` (a
committed append survives a crash of the process; see the README's durability
section) and takes the write lock at ``BEGIN`` for appends, so two writers never
interleave a hash chain; a PostgreSQL engine uses psycopg 3.

A SQLite connection waits up to its busy timeout for another writer's lock
(30 s, or the URL's ``?timeout=SECONDS``); past it, and for PostgreSQL lock,
deadlock and statement timeouts, the error is :class:`StoreBusy`: the store
is busy, not refusing, and a writer may simply try again.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from recorder.errors import DatabaseUnavailable, ImmutableLogError, StoreBusy, StoreError

__all__ = ["create_engine", "describe_url", "sqlite_busy_timeout", "translate_errors"]

_BUSY_TIMEOUT = 30.0
# SQLite result codes (the low byte of an extended code): another connection
# holds the lock (SQLITE_BUSY), or a table lock in shared cache (SQLITE_LOCKED).
_SQLITE_BUSY_CODES = (5, 6)
# PostgreSQL: lock_not_available (lock_timeout), serialization_failure,
# deadlock_detected, query_canceled (statement_timeout): all worth a retry.
_PG_BUSY_STATES = ("55P03", "40001", "40P01", "57014")


def describe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def create_engine(
    url: str, *, create_dir: bool = False, busy_timeout: float | None = None
) -> Engine:
    """An engine for ``url`` with the backend's pragmas and transaction rules.

    ``busy_timeout`` (SQLite) overrides the URL's: how long one statement waits
    for another connection's lock before it fails with :class:`StoreBusy`.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseUnavailable(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, create_dir=create_dir, busy_timeout=busy_timeout)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise DatabaseUnavailable(
        f"unsupported database {backend!r} in {describe_url(url)}: use sqlite:/// or postgresql://"
    )


def is_process_local(url: str) -> bool:
    """True for an in-memory SQLite database: no other process can open it."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return False  # opening it reports the mistake
    if parsed.get_backend_name() != "sqlite":
        return False
    return parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"


def sqlite_busy_timeout(url: str) -> float:
    """Seconds a SQLite connection to ``url`` waits for another writer's lock."""
    return _busy_timeout(sa.make_url(url))


def _sqlite_engine(parsed: sa.URL, *, create_dir: bool, busy_timeout: float | None) -> Engine:
    database = parsed.database
    if database and database != ":memory:":
        parent = Path(database).expanduser().parent
        if create_dir:
            parent.mkdir(parents=True, exist_ok=True)
        elif not parent.is_dir():
            raise DatabaseUnavailable(f"cannot open {parsed}: directory {parent} does not exist")
    busy_ms = int((_busy_timeout(parsed) if busy_timeout is None else busy_timeout) * 1000)
    engine = sa.create_engine(parsed, connect_args={"timeout": busy_ms / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide when a
        # transaction starts, so appends can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _busy_timeout(parsed: sa.URL) -> float:
    """Seconds a SQLite connection waits for another writer's lock (``?timeout=`` in the URL)."""
    value = parsed.query.get("timeout")
    if value is None:
        return _BUSY_TIMEOUT
    try:
        seconds = float(value if isinstance(value, str) else value[-1])
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise DatabaseUnavailable(f"timeout={value!r} in {parsed} is not a number of seconds")
    return seconds


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver errors into :class:`StoreError` subclasses with a one-line message."""
    try:
        yield
    except DBAPIError as exc:
        raise _translate(exc, url) from exc


def _translate(exc: DBAPIError, url: str) -> StoreError:
    text = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    where = describe_url(url)
    if "immutable" in text:
        return ImmutableLogError(f"events are immutable: {text}")
    if _is_busy(exc):
        return StoreBusy(f"the database at {where} is busy: {text}")
    if exc.connection_invalidated or _is_connect_error(exc):
        return DatabaseUnavailable(f"cannot reach the database at {where}: {text}")
    if isinstance(exc, (OperationalError, ProgrammingError)):
        return StoreError(f"database error at {where}: {text}")
    return StoreError(f"database error at {where}: {text}")


def _is_busy(exc: DBAPIError) -> bool:
    """Another writer holds a lock we waited for too long: worth retrying, nothing refused."""
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_BUSY_CODES
    return getattr(orig, "sqlstate", None) in _PG_BUSY_STATES


def _is_connect_error(exc: DBAPIError) -> bool:
    text = str(exc.orig)
    markers = (
        "connection failed",
        "Connection refused",
        "could not connect",
        "unable to open database",
        "does not exist",
        "password authentication failed",
        "no password supplied",
        "timeout expired",
    )
    return any(m in text for m in markers)

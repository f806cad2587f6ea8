"""Engines for the two backends, and the one place driver errors become ours.

Guarantees: a SQLite engine runs in WAL mode with ``synchronous=NORMAL`` (a
committed append survives a crash of the process; see the README's durability
section) and takes the write lock at ``BEGIN`` for appends, so two writers never
interleave a hash chain; a PostgreSQL engine uses psycopg 3.
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

from recorder.errors import DatabaseUnavailable, ImmutableLogError, StoreError

__all__ = ["create_engine", "describe_url", "translate_errors"]

_BUSY_TIMEOUT_MS = 30_000


def describe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def create_engine(url: str, *, create_dir: bool = False) -> Engine:
    """An engine for ``url`` with the backend's pragmas and transaction rules."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseUnavailable(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, create_dir=create_dir)
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


def _sqlite_engine(parsed: sa.URL, *, create_dir: bool) -> Engine:
    database = parsed.database
    if database and database != ":memory:":
        parent = Path(database).expanduser().parent
        if create_dir:
            parent.mkdir(parents=True, exist_ok=True)
        elif not parent.is_dir():
            raise DatabaseUnavailable(f"cannot open {parsed}: directory {parent} does not exist")
    engine = sa.create_engine(parsed, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide when a
        # transaction starts, so appends can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


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
    if exc.connection_invalidated or _is_connect_error(exc):
        return DatabaseUnavailable(f"cannot reach the database at {where}: {text}")
    if isinstance(exc, (OperationalError, ProgrammingError)):
        return StoreError(f"database error at {where}: {text}")
    return StoreError(f"database error at {where}: {text}")


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

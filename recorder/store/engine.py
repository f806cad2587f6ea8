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
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from recorder.config import SQLITE_BUSY_CODES, SQLITE_BUSY_TIMEOUT, as_typed
from recorder.errors import (
    DatabaseUnavailable,
    ImmutableLogError,
    NoSuchDatabase,
    StoreBusy,
    StoreError,
)

__all__ = [
    "create_engine",
    "describe_url",
    "sqlite_busy_timeout",
    "sqlite_path",
    "translate_errors",
]

# PostgreSQL: lock_not_available (lock_timeout), serialization_failure,
# deadlock_detected, query_canceled (statement_timeout): all worth a retry.
_PG_BUSY_STATES = ("55P03", "40001", "40P01", "57014")


# The password of a URL, where SQLAlchemy's parser finds it (scheme://user:password@).
_PASSWORD = re.compile(r"^(?P<head>[\w+]+://[^:/]*:)[^@]*@")


def describe_url(url: str) -> str:
    """The URL as the user typed it (see :func:`recorder.config.as_typed`), password hidden.

    Hidden in the text as typed, not by re-rendering the parsed URL, which
    would escape what the user did not (``:memory:`` as ``%3Amemory%3A``).
    """
    return _PASSWORD.sub(r"\g<head>***@", as_typed(url), count=1)


def _parse(url: str) -> sa.URL | None:
    """``url`` parsed, or None when it is not one (a bad port is a ``ValueError`` there)."""
    try:
        return sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return None


def create_engine(
    url: str,
    *,
    create: bool = False,
    busy_timeout: float | None = None,
    pg_appends: bool = False,
) -> Engine:
    """An engine for ``url`` with the backend's pragmas and transaction rules.

    A SQLite file (and its directory) is created only with ``create=True``;
    otherwise a missing file is :class:`NoSuchDatabase`, so that reading from
    a mistyped path never leaves an empty database behind. ``busy_timeout``
    (SQLite) overrides the URL's: how long one statement waits for another
    connection's lock before it fails with :class:`StoreBusy`.

    ``pg_appends`` (PostgreSQL): the engine of the store's appends, whose
    driver connections are in autocommit mode (an append sends its own
    ``BEGIN``, in the same round trip as its first statements) and are not
    pinged at checkout (an append finds a dead one with its first round trip
    and tries again; see :mod:`recorder.store.pgwire`).
    """
    parsed = _parse(url)
    if parsed is None:
        raise DatabaseUnavailable(
            f"not a database URL: {describe_url(url)!r} (use sqlite:///PATH or "
            "postgresql://user@host:port/db, where a port is a number and an IPv6 host is "
            "in [brackets])"
        )
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, url, create=create, busy_timeout=busy_timeout)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if pg_appends:
            return sa.create_engine(parsed, isolation_level="AUTOCOMMIT")
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise DatabaseUnavailable(
        f"unsupported database {backend!r} in {describe_url(url)}: use sqlite:/// or postgresql://"
    )


def is_process_local(url: str) -> bool:
    """True for an in-memory SQLite database: no other process can open it."""
    parsed = _parse(url)
    if parsed is None:
        return False  # opening it reports the mistake
    if parsed.get_backend_name() != "sqlite":
        return False
    return parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL opens, or None (in memory, not SQLite, or not a URL)."""
    parsed = _parse(url)
    if parsed is None:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if parsed.query.get("uri") == "true":
        if parsed.query.get("mode") == "memory" or "mode=memory" in database:
            return None
        database = database.removeprefix("file:").split("?", 1)[0]
    return Path(database).expanduser()


def sqlite_busy_timeout(url: str) -> float:
    """Seconds a SQLite connection to ``url`` waits for another writer's lock."""
    return _busy_timeout(sa.make_url(url))


def _busy_timeout(parsed: sa.URL) -> float:
    """Seconds a SQLite connection waits for another writer's lock (``?timeout=`` in the URL)."""
    value = parsed.query.get("timeout")
    if value is None:
        return SQLITE_BUSY_TIMEOUT
    try:
        seconds = float(value if isinstance(value, str) else value[-1])
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise DatabaseUnavailable(f"timeout={value!r} in {parsed} is not a number of seconds")
    return seconds


def _sqlite_engine(parsed: sa.URL, url: str, *, create: bool, busy_timeout: float | None) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_path(path, url, create=create)
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


def _not_a_directory(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a directory (a file), else None."""
    for ancestor in path.parents:
        try:
            if ancestor.exists():
                return None if ancestor.is_dir() else ancestor
        except OSError:
            return None
    return None


def _check_sqlite_path(path: Path, url: str, *, create: bool) -> None:
    """Refuse, before SQLite would create an empty file, what cannot be this database."""
    where = describe_url(url)
    if path.is_dir():
        raise DatabaseUnavailable(
            f"{where} is a directory, not a database file: name a file in it "
            f"(e.g. sqlite:///{path / 'codetape.db'})"
        )
    blocker = _not_a_directory(path)
    if blocker is not None:
        raise DatabaseUnavailable(
            f"cannot open {where}: {blocker} is a file, not a directory; check the path"
        )
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(
                f"cannot create the directory {path.parent} for {where}: {exc.strerror}"
            ) from None
        return
    if not path.exists():
        missing = "" if path.parent.is_dir() else f" (nor its directory {path.parent})"
        raise NoSuchDatabase(
            f"no such database file: {path}{missing}; check the path, or create a database "
            f"there with `codetape db upgrade --db {where}`"
        )


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Turn driver errors into :class:`StoreError` subclasses with a one-line message."""
    try:
        yield
    except DBAPIError as exc:
        interrupt = _interrupt_behind(exc)
        if interrupt is not None:
            # Ctrl-C inside a statement leaves the connection busy, and the
            # driver's cleanup then fails on it: the user's interrupt, not a
            # database error, is what happened.
            raise interrupt from None
        raise _translate(exc, url) from exc


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt whose handling raised ``exc``, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


def _translate(exc: DBAPIError, url: str) -> StoreError:
    text = _first_line(exc)
    where = describe_url(url)
    if "immutable" in text:
        return ImmutableLogError(f"events are immutable: {text}")
    if _is_busy(exc):
        return StoreBusy(f"the database at {where} is busy: {text}")
    path = sqlite_path(url)
    if path is not None and ("unable to open database" in text or "readonly database" in text):
        return _sqlite_problem(path, where, text)
    if "connection failed" in text or "failed to resolve host" in text:
        return _postgres_problem(url, where, text)
    if exc.connection_invalidated:
        return DatabaseUnavailable(f"lost the connection to the database at {where}: {text}")
    return StoreError(f"database error at {where}: {text}")


def _is_busy(exc: DBAPIError) -> bool:
    """Another writer holds a lock we waited for too long: worth retrying, nothing refused."""
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in SQLITE_BUSY_CODES
    return getattr(orig, "sqlstate", None) in _PG_BUSY_STATES


def _sqlite_problem(path: Path, where: str, text: str) -> StoreError:
    """Name why SQLite could not open or write ``path`` (its own message says little)."""
    if path.is_dir():
        return DatabaseUnavailable(f"{where} is a directory, not a database file")
    directory = path.parent if str(path.parent) else Path(".")
    if not os.access(directory, os.W_OK):
        if not path.exists():
            return DatabaseUnavailable(
                f"cannot create {where}: the directory {directory} is read-only"
            )
        return DatabaseUnavailable(
            f"cannot use {where}: the directory {directory} is read-only, and SQLite needs "
            "to create the database's journal files (-wal, -shm) beside it"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return DatabaseUnavailable(f"cannot use {where}: permission denied on {path}")
    return DatabaseUnavailable(f"cannot open the SQLite database {where}: {text}")


_PG_QUOTED = re.compile(r'"([^"]*)"')


def _postgres_problem(url: str, where: str, text: str) -> StoreError:
    """A failed PostgreSQL connection: a missing database, a refused login, or no server."""
    reason = text.split("FATAL:", 1)[-1].strip() if "FATAL:" in text else text
    parsed = _parse(url)
    server = where if parsed is None else f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    quoted = _PG_QUOTED.search(reason)
    name = quoted.group(1) if quoted else "?"
    if reason.startswith("database ") and reason.endswith("does not exist"):
        return NoSuchDatabase(
            f"no database {name!r} on the PostgreSQL server at {server}: create it "
            f"(createdb {name}), then run `codetape db upgrade --db {where}`"
        )
    if reason.startswith("role ") and reason.endswith("does not exist"):
        return DatabaseUnavailable(
            f"the PostgreSQL server at {server} has no user {name!r} (in {where})"
        )
    if "authentication failed" in reason or "no password supplied" in reason:
        return DatabaseUnavailable(
            f"the PostgreSQL server at {server} refused the login for {where}: {reason}"
        )
    if "FATAL:" in text:
        return DatabaseUnavailable(f"the PostgreSQL server at {server} refused {where}: {reason}")
    # psycopg: 'connection failed: connection to server at "h", port p failed: <why>'
    reason = reason.rsplit(" failed: ", 1)[-1]
    return DatabaseUnavailable(
        f"cannot reach the PostgreSQL server at {server} ({where}): {reason}"
    )

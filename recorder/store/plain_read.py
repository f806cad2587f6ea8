"""Read-only listings through the bare DB-API driver: a fast start, the same answers.

Guarantees:

* :func:`list_sessions` gives exactly what ``EventStore.open(url).sessions()``
  gives (the same SQL and the same assembly, :mod:`recorder.store.listing`),
  or raises the same error with the same message.
* It first tries the plain path, which imports neither SQLAlchemy nor
  Alembic: :mod:`sqlite3` for a ``sqlite:///PATH`` URL, psycopg (imported
  only then) for a plain ``postgresql://user:password@host:port/db`` URL.
  The plain path answers only a database that exists and is at this code's
  :data:`~recorder.store.revision.SCHEMA_REVISION`. Anything else (another URL
  form, a missing or unreadable file, no schema, another revision, any driver
  error) falls back to :class:`~recorder.store.EventStore`, whose checks give
  the messages: an in-memory database, the embedded default's first use (it
  is created there), a revision newer or older than this codetape.
* The plain path never creates or changes a file: SQLite opens the file
  read-write without create (``mode=rw``), as the store does for readers,
  and only reads; it never changes the journal mode either.
* Two failures are reported by the plain path itself rather than tried again
  through the store, as they would take as long again: a SQLite database busy
  past its timeout, and a PostgreSQL server that cannot be reached or refuses
  the connection. Their messages are the store's.
"""

from __future__ import annotations

import re
import sqlite3
from typing import TYPE_CHECKING
from urllib.parse import quote

from recorder.config import SQLITE_BUSY_CODES, SQLITE_BUSY_TIMEOUT, resolve_url
from recorder.errors import StoreBusy
from recorder.store.listing import SessionInfo, sessions_from
from recorder.store.revision import SCHEMA_REVISION

if TYPE_CHECKING:
    from recorder.store.listing import Rows

__all__ = ["list_sessions", "plain_sessions"]

_SQLITE_PREFIX = "sqlite:///"
# Only URLs that libpq and SQLAlchemy read alike (each part percent-decoded,
# one host, a database named, no query): anything else goes to the store.
_PG_URL = re.compile(
    r"postgresql\+psycopg://(?:[^:@/?#\[\]]*(?::[^@/?#]*)?@)?[^:@/?#,\[\]]*(?::\d+)?/[^/?#]+"
)
_VERSION_SQL = "SELECT version_num FROM alembic_version"


def list_sessions(url: str | None = None) -> list[SessionInfo]:
    """Every session of the log at ``url`` (resolved like ``--db``), in log order."""
    found = plain_sessions(resolve_url(url))
    if found is not None:
        return found
    from recorder.store.store import EventStore

    with EventStore.open(url) as store:
        return store.sessions()


def plain_sessions(url: str) -> list[SessionInfo] | None:
    """The sessions at the resolved ``url`` read without SQLAlchemy; None: ask the store."""
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None:
        return _sqlite_sessions(url, *sqlite_file)
    if _PG_URL.fullmatch(url):
        return _postgres_sessions(url)
    return None


def _sqlite_file(url: str) -> tuple[str, float] | None:
    """The file of a plain ``sqlite:///PATH[?timeout=SECONDS]`` URL and its busy timeout,
    as the store reads them; else None."""
    if not url.startswith(_SQLITE_PREFIX):
        return None
    path, _, query = url[len(_SQLITE_PREFIX) :].partition("?")
    timeout = SQLITE_BUSY_TIMEOUT
    if query:
        name, _, value = query.partition("=")
        try:
            timeout = float(value) if name == "timeout" else -1.0
        except ValueError:
            return None
        if not 0 <= timeout < 1e9:  # also NaN and inf: the store's to refuse
            return None
    # In memory, other queries, escapes and ~ are the store's to read.
    if not path or path == ":memory:" or path.startswith("~") or any(c in path for c in "%#"):
        return None
    return path, timeout


def _sqlite_sessions(url: str, path: str, timeout: float) -> list[SessionInfo] | None:
    try:
        conn = sqlite3.connect(
            f"file:{quote(path)}?mode=rw", uri=True, timeout=timeout, isolation_level=None
        )
    except sqlite3.Error:
        return None
    try:
        # One read transaction, as the store's connection reads in one.
        conn.execute("BEGIN")
        versions = conn.execute(_VERSION_SQL).fetchall()
        if [v[0] for v in versions] != [SCHEMA_REVISION]:
            return None  # the store says what is wrong

        def run(sql: str) -> Rows:
            return conn.execute(sql).fetchall()

        return sessions_from(run)
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in SQLITE_BUSY_CODES:
            from recorder.store.engine import describe_url

            text = str(exc).strip().splitlines()[0]
            raise StoreBusy(f"the database at {describe_url(url)} is busy: {text}") from exc
        return None
    finally:
        conn.close()


def _postgres_sessions(url: str) -> list[SessionInfo] | None:
    try:
        import psycopg
    except ImportError:
        return None
    conninfo = "postgresql://" + url.removeprefix("postgresql+psycopg://")
    try:
        conn = psycopg.connect(conninfo)
    except psycopg.Error as exc:
        _raise_unreachable(url, exc)
        return None
    try:
        with conn.cursor() as cursor:
            cursor.execute(_VERSION_SQL)
            if [v[0] for v in cursor.fetchall()] != [SCHEMA_REVISION]:
                return None  # the store says what is wrong

            def run(sql: str) -> Rows:
                cursor.execute(sql)
                return cursor.fetchall()

            return sessions_from(run)
    except psycopg.Error:
        return None
    finally:
        conn.close()


def _raise_unreachable(url: str, exc: Exception) -> None:
    """Raise what the store says of a connection that failed so, if it would say it first.

    The store's translation (recorder.store.engine) checks, in order: the
    word "immutable", a busy SQLSTATE, then these connection failures.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "immutable" in text or getattr(exc, "sqlstate", None) is not None:
        return
    if "connection failed" in text or "failed to resolve host" in text:
        from recorder.store.engine import _postgres_problem, describe_url

        raise _postgres_problem(url, describe_url(url), text) from exc

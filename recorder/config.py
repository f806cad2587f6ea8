"""Where the database is: ``--db``, else ``CODETAPE_DB``, else an embedded SQLite file.

Guarantees: :func:`resolve_url` always returns a SQLAlchemy URL string;
``postgresql://`` and ``postgres://`` URLs are routed to psycopg 3, and a bare
file path is taken as a SQLite file. An empty URL is a mistake, never a
silent fall back to the default. Messages about a database name it as the
user spelled it (:func:`as_typed`), not in its normalised form.
"""

from __future__ import annotations

import os
from pathlib import Path

from recorder.errors import CodetapeError

__all__ = [
    "ENV_VAR",
    "SQLITE_BUSY_CODES",
    "SQLITE_BUSY_TIMEOUT",
    "as_typed",
    "default_sqlite_path",
    "is_default",
    "normalize_url",
    "resolve_url",
]

ENV_VAR = "CODETAPE_DB"

# Seconds a SQLite connection waits for another writer's lock when the URL
# gives no ``?timeout=``. Here, not in the store's engine module, so that the
# plain read path uses the same value without importing SQLAlchemy.
SQLITE_BUSY_TIMEOUT = 30.0
# SQLite result codes (the low byte of an extended code): another connection
# holds the lock (SQLITE_BUSY), or a table lock in shared cache (SQLITE_LOCKED).
SQLITE_BUSY_CODES = (5, 6)

# Normalised URL -> the spelling it was given in. Filled by normalize_url, so
# that a message about "postgresql+psycopg://..." can say what the user typed.
_TYPED: dict[str, str] = {}


def default_sqlite_path() -> Path:
    """The embedded database: ``codetape.db`` in the user's data directory."""
    import platformdirs  # only here: a command given --db never needs it

    return Path(platformdirs.user_data_dir("codetape", appauthor=False)) / "codetape.db"


def normalize_url(url: str) -> str:
    """Accept the usual spellings and return a SQLAlchemy URL."""
    if not url.strip():
        raise CodetapeError(
            "the database URL is empty: give sqlite:///PATH or postgresql://user@host:port/db"
        )
    normalized = url
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            normalized = "postgresql+psycopg://" + url[len(prefix) :]
            break
    else:
        if "://" not in url:
            normalized = "sqlite:///" + str(Path(url).expanduser().resolve())
    if normalized != url:
        _TYPED[normalized] = url
    return normalized


def as_typed(url: str) -> str:
    """The spelling ``url`` was given in to :func:`normalize_url` (``url`` itself if none)."""
    return _TYPED.get(url, url)


def resolve_url(explicit: str | None = None) -> str:
    """``explicit`` (from ``--db``), else ``$CODETAPE_DB``, else the embedded default.

    An empty ``explicit`` is refused (``--db ""`` is a mistake); an empty
    ``$CODETAPE_DB`` counts as unset, as shells make unsetting awkward.
    """
    if explicit is not None:
        return normalize_url(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return normalize_url(env)
    return "sqlite:///" + str(default_sqlite_path())


def is_default(url: str) -> bool:
    """True when ``url`` is the embedded default, which codetape sets up by itself."""
    return url == "sqlite:///" + str(default_sqlite_path())

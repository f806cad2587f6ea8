"""Where the database is: ``--db``, else ``CODETAPE_DB``, else an embedded SQLite file.

Guarantees: :func:`resolve_url` always returns a SQLAlchemy URL string;
``postgresql://`` and ``postgres://`` URLs are routed to psycopg 3, and a bare
file path is taken as a SQLite file.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["ENV_VAR", "default_sqlite_path", "is_default", "normalize_url", "resolve_url"]

ENV_VAR = "CODETAPE_DB"


def default_sqlite_path() -> Path:
    """The embedded database: ``codetape.db`` in the user's data directory."""
    return Path(platformdirs.user_data_dir("codetape", appauthor=False)) / "codetape.db"


def normalize_url(url: str) -> str:
    """Accept the usual spellings and return a SQLAlchemy URL."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if "://" not in url:
        return "sqlite:///" + str(Path(url).expanduser().resolve())
    return url


def resolve_url(explicit: str | None = None) -> str:
    """``explicit`` (from ``--db``), else ``$CODETAPE_DB``, else the embedded default."""
    if explicit:
        return normalize_url(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return normalize_url(env)
    return "sqlite:///" + str(default_sqlite_path())


def is_default(url: str) -> bool:
    """True when ``url`` is the embedded default, which codetape sets up by itself."""
    return url == "sqlite:///" + str(default_sqlite_path())

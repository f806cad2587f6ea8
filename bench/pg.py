"""A PostgreSQL server for a benchmark: the one at --pg-url, else a throwaway one.

The throwaway server is tests/pg_server.py's (initdb as the postgres user on a
free 127.0.0.1 port), stopped when the benchmark ends.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


@contextlib.contextmanager
def pg_databases(pg_url: str | None, *names: str) -> Iterator[dict[str, str] | None]:
    """Fresh databases ``names`` as SQLAlchemy URLs, or None (with a message) without PostgreSQL."""
    from pg_server import PgServer, find_bindir

    server = None
    admin = pg_url
    if admin is None:
        bindir, reason = find_bindir()
        if bindir is None:
            print(f"PostgreSQL skipped: {reason}")
            yield None
            return
        server = PgServer(bindir).start()
        admin = server.admin_url
    try:
        libpq = admin.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(libpq, autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP DATABASE IF EXISTS {name}")
                conn.execute(f"CREATE DATABASE {name}")
        base = libpq.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
        yield {name: f"{base}/{name}" for name in names}
    finally:
        if server is not None:
            server.stop()

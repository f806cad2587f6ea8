"""Shared fixtures: a database URL for every backend the store supports.

- ``sqlite_url``: a SQLite file under ``tmp_path``.
- ``pg_server`` (session): a real PostgreSQL server started for this test session
  (see ``tests/pg_server.py``), or the one at ``$CODETAPE_TEST_PG_URL``
  (an admin URL such as ``postgresql://postgres@127.0.0.1:5432/postgres``).
- ``pg_url``: a fresh, empty database on that server, dropped after the test;
  ``make_pg_url()`` makes more of them in one test.
- ``db_url``: parametrized, ids ``sqlite`` and ``postgres``; the postgres case
  carries the ``postgres`` marker (``-m "not postgres"`` deselects it).
- ``migrated_db_url``: ``db_url``'s database (same URL), already at the head
  revision: a copy of a database migrated once per test session (a SQLite file
  copied, or ``CREATE DATABASE ... TEMPLATE``), since running every migration
  again for each test costs far more. Tests about migrating use ``db_url``.
- ``store``: an open store on ``migrated_db_url``.

Without PostgreSQL binaries the postgres tests are skipped, unless
``CODETAPE_REQUIRE_POSTGRES=1``, which makes them fail instead (CI sets it).

Kept generic on purpose: nothing here imports codetape at module level (the
fixtures that need it import it when they run).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:  # for pg_server, under any --import-mode
    sys.path.insert(0, _HERE)
from pg_server import PgServer, PgServerError, find_bindir  # noqa: E402
from wheel_venv import WheelVenv, install_wheel  # noqa: E402

if TYPE_CHECKING:
    from recorder.store import EventStore

pytest_plugins = ["pytester"]  # tests/test_pg_fixture.py runs inner sessions

# The embedded default database lives in the user's data directory: the test run
# gets its own (subprocesses too), so no test reads or changes the user's log,
# nor one another checkout's codetape upgraded.
_DATA_HOME = tempfile.mkdtemp(prefix="codetape-test-data-")
atexit.register(shutil.rmtree, _DATA_HOME, True)
os.environ["XDG_DATA_HOME"] = _DATA_HOME
os.environ.pop("CODETAPE_DB", None)

PG_URL_ENV = "CODETAPE_TEST_PG_URL"
REQUIRE_PG_ENV = "CODETAPE_REQUIRE_POSTGRES"

_started_servers: list[PgServer] = []


@dataclass(frozen=True)
class ExternalPgServer:
    admin_url: str


def _libpq_url(url: str) -> str:
    """psycopg wants ``postgresql://``, not SQLAlchemy's ``postgresql+psycopg://``."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_PG_ENV) == "1":
        pytest.fail(f"{REQUIRE_PG_ENV}=1 but PostgreSQL is unavailable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer | ExternalPgServer]:
    external = os.environ.get(PG_URL_ENV)
    if external:
        yield ExternalPgServer(admin_url=_libpq_url(external))
        return
    bindir, reason = find_bindir()
    if bindir is None:
        _unavailable(reason)
    try:
        server = PgServer(bindir).start()
    except PgServerError as exc:
        pytest.fail(f"could not start the PostgreSQL test server: {exc}", pytrace=False)
    _started_servers.append(server)
    try:
        yield server
    finally:
        server.stop()


def _db_name(request: pytest.FixtureRequest) -> str:
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    return f"t_{stem[:40]}_{uuid.uuid4().hex[:12]}"  # < 63 bytes, unique


@pytest.fixture
def make_pg_url(
    pg_server: PgServer | ExternalPgServer, request: pytest.FixtureRequest
) -> Iterator[Callable[[], str]]:
    """Factory: each call creates another fresh, empty database; all dropped after the test."""
    admin = _libpq_url(pg_server.admin_url)
    created: list[str] = []

    def make() -> str:
        name = _db_name(request)
        with psycopg.connect(admin, autocommit=True) as conn:
            # template0: empty even if someone has filled template1 on an external server.
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            )
        created.append(name)
        url = make_url(admin).set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    yield make
    if created:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in created:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@pytest.fixture
def pg_url(make_pg_url: Callable[[], str]) -> str:
    """A fresh, empty PostgreSQL database: ``postgresql+psycopg://postgres@127.0.0.1:PORT/db``."""
    return make_pg_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'codetape.db'}"


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    # getfixturevalue, so the PostgreSQL server only starts when a postgres case runs.
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def _migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the head revision, made once per session, to copy."""
    from recorder.store import migrate

    path = tmp_path_factory.mktemp("migrated") / "codetape.db"
    migrate.upgrade(f"sqlite:///{path}")
    # Fold the WAL into the main file, so that the file alone is the whole database.
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path


@pytest.fixture(scope="session")
def _migrated_pg_template(pg_server: PgServer | ExternalPgServer) -> Iterator[str]:
    """The name of a PostgreSQL database at the head revision, made once per session,
    to create others from (``CREATE DATABASE ... TEMPLATE``); dropped at the end."""
    from recorder.store import migrate

    admin = _libpq_url(pg_server.admin_url)
    name = f"t_migrated_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        url = make_url(admin).set(drivername="postgresql+psycopg", database=name)
        migrate.upgrade(url.render_as_string(hide_password=False))
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def migrated_db_url(db_url: str, request: pytest.FixtureRequest) -> str:
    """``db_url``, its fresh database replaced by a copy of the session's migrated one."""
    parsed = make_url(db_url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database, db_url
        target = Path(parsed.database)
        assert not target.exists(), f"{target} is not the fresh database db_url made"
        shutil.copyfile(request.getfixturevalue("_migrated_sqlite_file"), target)
        return db_url
    template = str(request.getfixturevalue("_migrated_pg_template"))
    admin = _libpq_url(request.getfixturevalue("pg_server").admin_url)
    name = sql.Identifier(str(parsed.database))
    with psycopg.connect(admin, autocommit=True) as conn:
        # Nothing has connected to db_url's database yet: it can be replaced.
        conn.execute(sql.SQL("DROP DATABASE {}").format(name))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(name, sql.Identifier(template))
        )
    return db_url


@pytest.fixture
def store(migrated_db_url: str) -> Iterator[EventStore]:
    """An upgraded, open store on each backend (through ``db_url``)."""
    from recorder.store import EventStore

    with EventStore.open(migrated_db_url) as opened:
        yield opened


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that ask for pg_url / pg_server directly are postgres tests too.
    for item in items:
        if "pg_server" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "postgres"
        ):
            item.add_marker(pytest.mark.postgres)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for server in _started_servers:
        terminalreporter.write_line(
            f"PostgreSQL test server ({server.bindir}) on port {server.port}: "
            f"started in {server.startup_seconds:.2f}s"
        )


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> WheelVenv:
    """codetape's wheel, built once per test run, installed into a fresh venv.

    Under pytest-xdist the workers of one run share the parent of their base
    temporary directories: the first worker to get here builds the wheel there,
    the others wait for it and use the same venv (the tests only run it).
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    workdir = base / "installed-wheel"
    with open(base / "installed-wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = workdir / "done"
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)  # a build that failed half-way
            workdir.mkdir()
            install_wheel(workdir)
            done.touch()
    return WheelVenv(workdir / "venv")

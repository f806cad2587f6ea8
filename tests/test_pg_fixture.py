"""The database fixtures themselves: a real PostgreSQL 15, fresh databases, both backends."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

TESTS_DIR = Path(__file__).parent


def _engine(url: str) -> Iterator[Engine]:
    engine = sa.create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _table_names(url: str) -> list[str]:
    for engine in _engine(url):
        return sorted(sa.inspect(engine).get_table_names())
    raise AssertionError("unreachable")


def test_pg_url_is_a_real_postgresql_15(pg_url: str) -> None:
    url = make_url(pg_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.username == "postgres"
    assert url.database and url.database != "postgres"
    for engine in _engine(pg_url):
        with engine.connect() as conn:
            version = conn.execute(sa.text("select version()")).scalar_one()
            assert "PostgreSQL 15" in version, version
            assert conn.execute(sa.text("select current_database()")).scalar_one() == url.database


def test_two_pg_databases_are_distinct_and_empty(
    pg_url: str, make_pg_url: Callable[[], str]
) -> None:
    other = make_pg_url()
    assert make_url(pg_url).database != make_url(other).database
    assert _table_names(pg_url) == []
    assert _table_names(other) == []
    for engine in _engine(pg_url):
        with engine.begin() as conn:
            conn.execute(sa.text("create table only_here (x int)"))
    assert _table_names(pg_url) == ["only_here"]
    assert _table_names(other) == []


def test_db_url_create_insert_select(db_url: str, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.id
    assert backend in ("sqlite", "postgres")
    metadata = sa.MetaData()
    events = sa.Table(
        "events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    for engine in _engine(db_url):
        assert engine.dialect.name == {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
        assert sa.inspect(engine).get_table_names() == []
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                events.insert(),
                [
                    {"kind": "request", "payload": {"n": 1}},
                    {"kind": "response", "payload": {"text": "héllo"}},
                ],
            )
        with engine.connect() as conn:
            rows = conn.execute(sa.select(events.c.kind, events.c.payload).order_by(events.c.id))
            assert [tuple(r) for r in rows] == [
                ("request", {"n": 1}),
                ("response", {"text": "héllo"}),
            ]


def test_only_the_postgres_case_is_marked(db_url: str, request: pytest.FixtureRequest) -> None:
    marked = request.node.get_closest_marker("postgres") is not None
    assert marked == (request.node.callspec.id == "postgres")


def test_direct_pg_url_users_are_marked(pg_url: str, request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("postgres") is not None


def _schema(url: str) -> dict[str, list[str]]:
    """Every table's columns, and every index and trigger name, of the database at ``url``."""
    for engine in _engine(url):
        inspector = sa.inspect(engine)
        schema = {
            t: [c["name"] for c in inspector.get_columns(t)] for t in inspector.get_table_names()
        }
        schema["-indexes"] = sorted(
            i["name"] or "" for t in inspector.get_table_names() for i in inspector.get_indexes(t)
        )
        with engine.connect() as conn:
            triggers = (
                "select name from sqlite_master where type = 'trigger'"
                if engine.dialect.name == "sqlite"
                else "select tgname from pg_trigger where not tgisinternal"
            )
            schema["-triggers"] = sorted(conn.execute(sa.text(triggers)).scalars())
        return schema
    raise AssertionError("unreachable")


def test_a_migrated_copy_is_what_the_migrations_make(
    migrated_db_url: str, db_url: str, request: pytest.FixtureRequest
) -> None:
    from recorder.store import migrate

    assert migrated_db_url == db_url
    assert migrate.current_revision(migrated_db_url) == migrate.head_revision()
    if request.node.callspec.id == "sqlite":
        fresh = f"sqlite:///{request.getfixturevalue('tmp_path') / 'fresh.db'}"
    else:
        fresh = request.getfixturevalue("make_pg_url")()
    migrate.upgrade(fresh)
    assert _schema(migrated_db_url) == _schema(fresh)


def test_a_migrated_copy_starts_empty_and_writes_only_to_itself(
    store: object, request: pytest.FixtureRequest
) -> None:
    from recorder.events import Event, EventKind, new_id
    from recorder.store import EventStore

    assert isinstance(store, EventStore)
    assert store.last_position() == 0
    store.append([Event(new_id(), EventKind.SESSION_OPEN, 0, meta={"name": "mine"})])
    assert store.last_position() == 1
    # The session's migrated original is untouched, for the tests after this one.
    if request.node.callspec.id == "sqlite":
        original = f"sqlite:///{request.getfixturevalue('_migrated_sqlite_file')}"
    else:
        admin = make_url(request.getfixturevalue("pg_server").admin_url)
        original = admin.set(
            drivername="postgresql+psycopg",
            database=request.getfixturevalue("_migrated_pg_template"),
        ).render_as_string(hide_password=False)
    for engine in _engine(original):
        with engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from events")).scalar_one() == 0


# -- inner pytest sessions: teardown, external servers, skip versus fail -----------------

INNER_TEST = """
import os
from pathlib import Path

def test_db(db_url, request):
    prefix = {"sqlite": "sqlite:///", "postgres": "postgresql+psycopg://"}
    assert db_url.startswith(prefix[request.node.callspec.id])

def test_pg(pg_url):
    Path(os.environ["RECORD_TO"]).write_text(pg_url)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("conftest.py", "pg_server.py", "wheel_venv.py"):
        shutil.copy(TESTS_DIR / name, pytester.path / name)
    pytester.makeini(
        "[pytest]\naddopts = --strict-markers -p no:cacheprovider -p no:codetape\n"
        "filterwarnings = error\nmarkers =\n    postgres: pg\n    slow: slow\n"
    )
    pytester.makepyfile(test_inner=INNER_TEST)
    monkeypatch.setenv("RECORD_TO", str(pytester.path / "record.txt"))
    for var in ("CODETAPE_TEST_PG_URL", "CODETAPE_REQUIRE_POSTGRES", "CODETAPE_PG_BINDIR"):
        monkeypatch.delenv(var, raising=False)
    return pytester


def test_external_server_and_database_dropped_after_test(
    inner: pytest.Pytester, pg_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_url: str = pg_server.admin_url  # type: ignore[attr-defined]
    # The inner session uses our server instead of starting its own.
    sqlalchemy_style = admin_url.replace("postgresql://", "postgresql+psycopg://")
    monkeypatch.setenv("CODETAPE_TEST_PG_URL", sqlalchemy_style)
    result = inner.runpytest_subprocess("-q")
    result.assert_outcomes(passed=3)  # db[sqlite], db[postgres], pg
    inner_url = make_url((inner.path / "record.txt").read_text())
    assert (inner_url.host, inner_url.port) == (make_url(admin_url).host, make_url(admin_url).port)
    with psycopg.connect(admin_url) as conn:
        left = conn.execute(
            "select count(*) from pg_database where datname = %s", (inner_url.database,)
        ).fetchone()
    assert left == (0,), f"database {inner_url.database} was not dropped"


def test_missing_binaries_skip(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODETAPE_PG_BINDIR", str(inner.path / "no-such-bindir"))
    result = inner.runpytest_subprocess("-q", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*PostgreSQL unavailable*not found*"])


def test_missing_binaries_fail_when_required(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODETAPE_PG_BINDIR", str(inner.path / "no-such-bindir"))
    monkeypatch.setenv("CODETAPE_REQUIRE_POSTGRES", "1")
    result = inner.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(["*CODETAPE_REQUIRE_POSTGRES=1 but PostgreSQL is unavailable*"])

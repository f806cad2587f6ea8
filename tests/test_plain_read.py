"""The plain read path of ``codetape sessions``: the store's answers without SQLAlchemy.

Each test runs on SQLite and PostgreSQL. The plain path must give what the
store gives (the records, and the command's text and JSON), hand every
database it should not read to the store (whose checks give the messages),
and create nothing.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from recorder.cli import main
from recorder.errors import DatabaseUnavailable, StoreBusy
from recorder.events import Event, EventKind
from recorder.ingest import import_file
from recorder.store import EventStore, migrate
from recorder.store.plain_read import list_sessions, plain_sessions

ROOT = Path(__file__).resolve().parents[1]
TAPES = [
    ROOT / "fixtures/realdata/vercel-ai/openai-code-interpreter-tool.1.jsonl",
    ROOT / "fixtures/realdata/pydantic-ai/test_openai_responses_model_http_error.jsonl",
]


def _open_session(sid: str, name: str, at_ns: int, exchanges: int) -> list[Event]:
    """A session still open, with labels, metadata (partial) and ``exchanges`` bare exchanges."""
    meta = {
        "name": name,
        "labels": {"team": "é", "run": "2"},
        "metadata": {"partial": "cut short"},
        "source": {"kind": "test"},
    }
    events = [Event(sid, EventKind.SESSION_OPEN, 0, recorded_at_ns=at_ns, meta=meta)]
    for n in range(exchanges):
        events.append(
            Event(
                sid,
                EventKind.REQUEST,
                0,
                exchange_id=f"{sid}-x{n}",
                recorded_at_ns=at_ns + n + 1,
                meta={"method": "POST", "url": "https://api.openai.com/v1/responses"},
            )
        )
    return events


@pytest.fixture
def log(db_url: str) -> str:
    """A log with closed, open, empty and unlabelled sessions, at this code's revision."""
    migrate.upgrade(db_url)
    with EventStore.open(db_url) as store:
        for tape in TAPES:
            import_file(store, str(tape))
        store.append(_open_session("s-open", "still open · ünïcode", 1_700_000_000_000_000_000, 3))
        store.append(_open_session("s-bare", "", 1_600_000_000_000_000_000, 0))
    return db_url


def _store_url(url: str) -> str:
    """The same database spelled so that the plain path leaves it to the store."""
    if url.startswith("sqlite:///"):
        return "sqlite+pysqlite:///" + url.removeprefix("sqlite:///")
    return url + "?connect_timeout=10"


def test_the_plain_path_reads_what_the_store_reads(log: str) -> None:
    assert plain_sessions(_store_url(log)) is None
    found = plain_sessions(log)
    with EventStore.open(log) as store:
        expected = store.sessions()
    assert found == expected
    assert len(expected) == 4
    opened = next(s for s in expected if s.id == "s-open")
    assert not opened.closed and opened.exchanges == 3
    assert opened.labels == {"team": "é", "run": "2"}
    assert opened.metadata == {"partial": "cut short"}
    assert any(s.closed and s.exchanges == 1 for s in expected)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_the_command_prints_the_same_on_both_paths(log: str, as_json: bool) -> None:
    extra = ["--json"] if as_json else []
    runner = CliRunner(env={"COLUMNS": "200"})
    plain = runner.invoke(main, ["sessions", "--db", log, *extra], catch_exceptions=False)
    store = runner.invoke(
        main, ["sessions", "--db", _store_url(log), *extra], catch_exceptions=False
    )
    assert plain.exit_code == store.exit_code == 0
    assert plain.output == store.output
    assert "still open · ünïcode (open) (partial)" in plain.output or as_json
    if as_json:
        assert len(json.loads(plain.output)) == 4


_PROBE = """
import json, sys
sys.argv = ["codetape", "sessions", "--db", sys.argv[1]]
from recorder.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps("sqlalchemy" in sys.modules), file=sys.stderr)
"""


def test_listing_sessions_imports_no_sqlalchemy(log: str) -> None:
    for url, imported in ((log, False), (_store_url(log), True)):
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, url], capture_output=True, text=True, check=True
        )
        assert "s-open" in done.stdout
        assert json.loads(done.stderr.strip().splitlines()[-1]) is imported, url


def _set_revision(url: str, revision: str | None) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if revision is None:
            conn.execute(sa.text("DELETE FROM alembic_version"))
        else:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


@pytest.mark.parametrize("revision", [None, "0004_no_replace", "0099_from_the_future"])
def test_another_revision_is_left_to_the_store(log: str, revision: str | None) -> None:
    _set_revision(log, revision)
    assert plain_sessions(log) is None


def test_no_schema_is_left_to_the_store(db_url: str) -> None:
    if db_url.startswith("sqlite:///"):
        sqlite3.connect(db_url.removeprefix("sqlite:///")).close()
    assert plain_sessions(db_url) is None


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///~/codetape-no-such.db",
        "sqlite:///{dir}/a%20b.db",
        "sqlite:///{dir}/log.db?mode=ro",
        "sqlite:///{dir}/log.db?timeout=soon",
        "sqlite:///{dir}/log.db?timeout=inf",
        "sqlite:///{dir}/missing.db",
        "sqlite:///{dir}",
        "mysql://someone@localhost/db",
    ],
)
def test_what_the_plain_path_cannot_read_it_leaves_alone(tmp_path: Path, url: str) -> None:
    migrate.upgrade(f"sqlite:///{tmp_path / 'log.db'}")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert plain_sessions(url.format(dir=tmp_path)) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_sqlite_url_with_a_timeout_is_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    migrate.upgrade(url)
    with EventStore.open(url) as store:
        store.append(_open_session("s-open", "open", 1_700_000_000_000_000_000, 1))
    found = plain_sessions(url + "?timeout=2.5")
    assert found is not None and [s.id for s in found] == ["s-open"]


def test_a_busy_sqlite_database_is_named_as_the_store_names_it(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    migrate.upgrade(f"sqlite:///{path}")
    url = f"sqlite:///{path}?timeout=0.05"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("SELECT count(*) FROM events").fetchall()
        with pytest.raises(StoreBusy) as plain:
            plain_sessions(url)
        with pytest.raises(StoreBusy) as store:
            EventStore.open(url)
    finally:
        holder.close()
    assert str(plain.value) == str(store.value)
    assert "is busy: database is locked" in str(plain.value)


def test_an_unreachable_server_is_named_without_asking_twice() -> None:
    url = "postgresql://someone:pw@127.0.0.1:1/db"
    with pytest.raises(DatabaseUnavailable) as store:
        EventStore.open(url)
    with pytest.raises(DatabaseUnavailable) as listed:
        list_sessions(url)
    # The plain path says it itself rather than leave it to the store to try again.
    with pytest.raises(DatabaseUnavailable) as plain:
        plain_sessions("postgresql+psycopg://someone:pw@127.0.0.1:1/db")
    assert str(listed.value) == str(store.value)
    assert str(plain.value) == str(store.value)
    assert "cannot reach the PostgreSQL server at 127.0.0.1:1" in str(store.value)
    assert "pw" not in str(store.value)

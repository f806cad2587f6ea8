"""Database mistakes through the CLI: each named for what it is, one line, nothing created.

A newer database (a revision this codetape does not know), a mistyped SQLite
path, a directory, a read-only directory, a missing PostgreSQL database, an
unreachable server, an empty ``--db`` and an in-memory URL each get their own
message, echoing the URL as typed with its password hidden.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_errors import one_error_line
from click.testing import CliRunner, Result

from recorder.cli import main
from recorder.store import migrate

ROOT = Path(__file__).resolve().parents[1]
TAPE = ROOT / "fixtures/realdata/pydantic-ai/test_openai_responses_model_http_error.jsonl"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def set_revision(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


# -- a database written by a newer codetape ------------------------------------


NEWER = (
    "is at revision 0099_from_the_future, newer than this codetape "
    f"({migrate.head_revision()}): upgrade codetape"
)


@pytest.mark.parametrize(
    "args",
    [
        ("sessions",),
        ("verify",),
        ("cost",),
        ("show", "anything"),
        ("import", str(TAPE)),
        ("export", "anything", "-o", "unused.jsonl"),
        ("db", "upgrade"),
        ("demo",),
        ("repair",),
        ("projections", "rebuild"),
    ],
)
def test_a_newer_database_says_upgrade_codetape_for_every_command(
    db_url: str, args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate.upgrade(db_url)
    set_revision(db_url, "0099_from_the_future")
    monkeypatch.chdir(tmp_path)
    line = one_error_line(run(*args, "--db", db_url), NEWER)
    assert "db upgrade" not in line
    assert not (tmp_path / "unused.jsonl").exists()


def test_a_newer_default_database_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The embedded default upgrades itself on first use: it must not try to here.
    monkeypatch.delenv("CODETAPE_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert run("sessions").exit_code == 0
    set_revision(f"sqlite:///{tmp_path / 'codetape' / 'codetape.db'}", "0099_from_the_future")
    for args in (("sessions",), ("import", str(TAPE)), ("demo",)):
        one_error_line(run(*args), NEWER)


def test_db_current_names_a_newer_revision(db_url: str) -> None:
    migrate.upgrade(db_url)
    set_revision(db_url, "0099_from_the_future")
    text = run("db", "current", "--db", db_url)
    assert text.exit_code == 0
    assert text.output.startswith("0099_from_the_future (newer than this codetape")
    report = json.loads(run("db", "current", "--db", db_url, "--json").output)
    assert report["state"] == "newer"
    assert report["revision"] == "0099_from_the_future"
    assert report["codetape_revision"] == migrate.head_revision()


def test_an_older_known_revision_still_says_db_upgrade(db_url: str) -> None:
    migrate.upgrade(db_url)
    set_revision(db_url, migrate.known_revisions()[0])
    one_error_line(run("sessions", "--db", db_url), "codetape db upgrade --db")


def test_upgrade_to_an_unknown_revision_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new.db"
    result = run("db", "upgrade", "--revision", "bogus", "--db", f"sqlite:///{target}")
    one_error_line(result, "cannot upgrade to 'bogus': no such revision", "0001_event_log")
    assert result.exit_code == 1
    assert not target.exists()


def test_no_schema_state_ends_in_a_traceback(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # two heads at once: no codetape ever writes that
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('0001_event_log')"))
    engine.dispose()
    for args in (("db", "current"), ("db", "upgrade"), ("demo",), ("sessions",)):
        one_error_line(run(*args, "--db", db_url), "several schema revisions")
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM alembic_version"))
    engine.dispose()
    one_error_line(run("sessions", "--db", db_url), "has no codetape schema")


# -- SQLite paths -----------------------------------------------------------------


@pytest.mark.parametrize("command", [("sessions",), ("verify",), ("db", "current"), ("cost",)])
def test_a_mistyped_sqlite_path_creates_nothing(
    tmp_path: Path, command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*command, "--db", "typo.db")
    one_error_line(result, "no such database file", str(tmp_path / "typo.db"), "--db typo.db")
    assert list(tmp_path.iterdir()) == []


def test_import_into_a_mistyped_path_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "typo.db"
    one_error_line(run("import", str(TAPE), "--db", f"sqlite:///{target}"), "no such database")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    line = one_error_line(run("sessions", "--db", f"sqlite:///{tmp_path}"), "is a directory")
    assert "cannot reach" not in line
    line = one_error_line(run("db", "upgrade", "--db", str(tmp_path)), "is a directory")


def _in_read_only_directory(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run codetape with ``directory`` read-only: a read-only bind mount as root, else 0555."""
    codetape = str(Path(sys.executable).parent / "codetape")
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            return subprocess.run([codetape, *args], capture_output=True, text=True, check=False)
        finally:
            directory.chmod(0o755)
    unshare = shutil.which("unshare")
    assert unshare is not None, "unshare (util-linux) is needed to test as root"
    script = (
        f'mount --bind "{directory}" "{directory}" && '
        f'mount -o remount,ro,bind "{directory}" && exec "$@"'
    )
    return subprocess.run(
        [unshare, "--mount", "sh", "-c", script, "sh", codetape, *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_read_only_directory_is_named(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    existing = ro / "log.db"
    migrate.upgrade(f"sqlite:///{existing}")
    for suffix in ("-wal", "-shm"):
        Path(f"{existing}{suffix}").unlink(missing_ok=True)
    before = sorted(p.name for p in ro.iterdir())
    read = _in_read_only_directory(ro, "import", str(TAPE), "--db", f"sqlite:///{existing}")
    assert read.returncode == 1, read.stderr
    assert read.stderr.startswith("Error: ") and read.stderr.count("\n") == 1, read.stderr
    assert f"the directory {ro} is read-only" in read.stderr
    assert "cannot reach" not in read.stderr
    created = _in_read_only_directory(ro, "db", "upgrade", "--db", f"sqlite:///{ro / 'new.db'}")
    assert created.returncode == 1
    assert (
        created.stderr
        == f"Error: cannot create sqlite:///{ro / 'new.db'}: the directory {ro} is read-only\n"
    )
    assert sorted(p.name for p in ro.iterdir()) == before


# -- PostgreSQL ----------------------------------------------------------------------


@pytest.mark.postgres
def test_a_missing_postgres_database_is_named(make_pg_url: Callable[[], str]) -> None:
    url = sa.make_url(make_pg_url())
    typed = f"postgresql://{url.username}:s3cret@{url.host}:{url.port}/no_such_db"
    line = one_error_line(
        run("sessions", "--db", typed),
        "no database 'no_such_db' on the PostgreSQL server at",
        "createdb no_such_db",
        f"postgresql://{url.username}:***@{url.host}:{url.port}/no_such_db",
    )
    assert "s3cret" not in line
    assert "postgresql+psycopg" not in line
    assert "cannot reach" not in line


@pytest.mark.postgres
def test_an_unknown_postgres_user_is_named(make_pg_url: Callable[[], str]) -> None:
    url = sa.make_url(make_pg_url())
    typed = f"postgres://ghost@{url.host}:{url.port}/{url.database}"
    one_error_line(run("sessions", "--db", typed), "has no user 'ghost'", f"(in {typed})")


def test_only_a_real_connection_failure_is_cannot_reach() -> None:
    line = one_error_line(
        run("sessions", "--db", "postgresql://someone:pw@127.0.0.1:1/db"),
        "cannot reach the PostgreSQL server at 127.0.0.1:1",
        "postgresql://someone:***@127.0.0.1:1/db",
        "Connection refused",
    )
    assert "psycopg" not in line


# -- the URL itself -----------------------------------------------------------------


def test_an_empty_db_is_an_error_not_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    result = run("sessions", "--db", "")
    one_error_line(result, "--db", "is empty")
    assert result.exit_code == 2
    one_error_line(run("--db", "", "sessions"), "is empty")
    assert list(tmp_path.iterdir()) == []  # the default database was not touched


def test_the_in_memory_hint_makes_sense() -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        line = one_error_line(run("sessions", "--db", url), "in-memory", "starts blank")
        assert "run `codetape db upgrade" not in line


def test_db_before_the_command(db_url: str, tmp_path: Path) -> None:
    migrate.upgrade(db_url)
    assert run("--db", db_url, "import", str(TAPE)).exit_code == 0
    listed = run("--db", db_url, "sessions", "--json")
    assert listed.exit_code == 0, listed.output
    assert len(json.loads(listed.output)) == 1
    other = f"sqlite:///{tmp_path / 'other.db'}"
    migrate.upgrade(other)
    # Given both, the one after the command wins.
    assert json.loads(run("--db", db_url, "sessions", "--db", other, "--json").output) == []


def test_db_upgrade_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = run("db", "upgrade", "--db", url, "--json")
    assert json.loads(result.output) == {"database": url, "revision": migrate.head_revision()}

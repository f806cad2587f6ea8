"""The Alembic history: head matches the models, round-trips, and ships in the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from recorder.store import migrate
from recorder.store.schema import SCHEMA_REVISION, metadata

ROOT = Path(__file__).resolve().parents[1]


def schema_diff(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_code_expects_the_head_revision() -> None:
    assert migrate.head_revision() == SCHEMA_REVISION


def test_blank_database_upgraded_to_head_matches_the_models(db_url: str) -> None:
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == SCHEMA_REVISION
    assert schema_diff(db_url) == []


def test_downgrade_then_upgrade_round_trips(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.downgrade(db_url, "base")
    assert migrate.current_revision(db_url) is None
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert "events" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    migrate.upgrade(db_url)
    assert schema_diff(db_url) == []
    # The triggers come back with the table.
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO events (position, session_id, seq, kind, recorded_at_ns, meta, payload,"
            " hash_format, prev_hash, hash) VALUES (1, 's', 0, 'session_open', 0, '{}', "
            + ("'\\x00'::bytea" if engine.dialect.name == "postgresql" else "X'00'")
            + ", 'x', 'x', 'x')"
        )
    with pytest.raises(sa.exc.DBAPIError, match="immutable"), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events")
    engine.dispose()


def test_upgrade_is_idempotent(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == SCHEMA_REVISION


@pytest.mark.slow
def test_installed_wheel_upgrades_a_blank_database(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv, and run `codetape db upgrade` from it."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("codetape-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    # Dependencies come from this environment's site-packages through a .pth line; the
    # .pth files in there (such as the editable install of this checkout) are not read.
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CODETAPE_DB")}
    database = tmp_path / "wheel.db"
    where = subprocess.run(
        [str(python), "-c", "import recorder.store.migrate as m; print(m.migrations_dir())"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    ).stdout.strip()
    assert where.startswith(str(venv)), where
    assert where.endswith("recorder/_migrations")
    upgraded = subprocess.run(
        [str(venv / "bin" / "codetape"), "db", "upgrade", "--db", f"sqlite:///{database}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert SCHEMA_REVISION in upgraded.stdout
    assert schema_diff(f"sqlite:///{database}") == []

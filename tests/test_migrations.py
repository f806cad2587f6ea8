"""The Alembic history: head matches the models, round-trips, and ships in the wheel."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from wheel_venv import WheelVenv

from recorder.store import migrate
from recorder.store.partitions import is_partition
from recorder.store.schema import SCHEMA_REVISION, metadata


def schema_diff(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            # The log's partitions are made at run time, not declared (see
            # recorder.store.partitions): the parent ``events`` is compared.
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": _not_a_partition}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def _not_a_partition(name: str | None, kind: str, parents: dict[str, str | None]) -> bool:
    table = name if kind == "table" else parents.get("table_name")
    return not is_partition(table or "")


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
        blob = "'\\x00'::bytea" if engine.dialect.name == "postgresql" else "X'00'"
        conn.exec_driver_sql(
            "INSERT INTO events (position, session_key, seq, kind_key, recorded_at_ns, payload,"
            f" hash_format_key, hash) VALUES (1, 1, 0, 1, 0, {blob}, 1, {blob})"
        )
    with pytest.raises(sa.exc.DBAPIError, match="immutable"), engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events")
    engine.dispose()


def test_upgrade_is_idempotent(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) == SCHEMA_REVISION


@pytest.mark.slow
def test_installed_wheel_upgrades_a_blank_database(
    tmp_path: Path, installed_wheel: WheelVenv
) -> None:
    """`codetape db upgrade` from an installed wheel finds its migrations and upgrades."""
    env = installed_wheel.env()
    database = tmp_path / "wheel.db"
    where = subprocess.run(
        [
            installed_wheel.bin("python"),
            "-c",
            "import recorder.store.migrate as m; print(m.migrations_dir())",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    ).stdout.strip()
    assert where.startswith(str(installed_wheel.root)), where
    assert where.endswith("recorder/_migrations")
    upgraded = subprocess.run(
        [installed_wheel.bin("codetape"), "db", "upgrade", "--db", f"sqlite:///{database}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert SCHEMA_REVISION in upgraded.stdout
    assert schema_diff(f"sqlite:///{database}") == []

"""Least-privilege PostgreSQL roles: each role does its job, connected as itself, and no more.

The roles come from `codetape db roles`; a login user in each role connects
on its own. Capture is a real recording through the SDK (``httpx2.MockTransport``
upstream) in strict mode, so a refused write raises instead of being logged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fake_upstream import Upstream, load_tape
from sqlalchemy.engine import make_url

from recorder import projections as P
from recorder.cli import main
from recorder.client import record
from recorder.errors import CodetapeError
from recorder.ingest import import_file
from recorder.store import EventStore, migrate
from recorder.store.roles import GRANTS, ROLES, RoleError, apply_roles, roles_sql

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
VERCEL_CI = "fixtures/realdata/vercel-ai/openai-code-interpreter-tool.1.jsonl"

# Recording is refused at the first table it writes: a new key (sessions), a lease or the log.
_CANNOT_RECORD = r"permission denied for table (sessions|leases|events)"


@dataclass
class RoleDb:
    prefix: str
    owner: str
    """The URL of the tables' owner (the test server's superuser)."""
    urls: dict[str, str]
    """role -> URL of a login user in that role."""

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.owner.replace("postgresql+psycopg://", "postgresql://"))


def _as_user(url: str, user: str) -> str:
    return make_url(url).set(username=user).render_as_string(hide_password=False)


@pytest.fixture
def role_db(pg_url: str) -> Iterator[RoleDb]:
    migrate.upgrade(pg_url)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    run = CliRunner().invoke(main, ["db", "roles", "--prefix", prefix, "--db", pg_url])
    assert run.exit_code == 0, run.output
    users = {role: f"{prefix}_{role}_login" for role in ROLES}
    db = RoleDb(prefix, pg_url, {role: _as_user(pg_url, user) for role, user in users.items()})
    with db.admin() as conn:
        for role, user in users.items():
            conn.execute(f"CREATE ROLE {user} LOGIN IN ROLE {prefix}_{role}")
    try:
        yield db
    finally:
        with db.admin() as conn:
            conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
            for role, user in users.items():
                conn.execute(f"DROP OWNED BY {user}, {prefix}_{role}")
                conn.execute(f"DROP ROLE {user}")
                conn.execute(f"DROP ROLE {prefix}_{role}")


def capture(url: str, name: str) -> list[str]:
    """Record one code interpreter stream through the SDK into ``url`` (strict: refusals raise)."""
    upstream = Upstream(load_tape(CI_STREAM))
    with record(
        url,
        name,
        transport=upstream.transport(),
        api_key="sk-test",
        base_url="https://api.openai.com/v1",
        max_retries=0,
        on_store_error="raise",
    ) as client:
        return [e.type for e in client.responses.create(model="m", input="x", stream=True)]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def refused(url: str, statement: str) -> str:
    """Run ``statement`` as the user of ``url``; return the error it must raise."""
    engine = sa.create_engine(url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as info, engine.begin() as conn:
            conn.exec_driver_sql(statement)
        return str(info.value.orig)
    finally:
        engine.dispose()


def test_the_recorder_records_and_verifies_and_nothing_else(role_db: RoleDb) -> None:
    url = role_db.urls["recorder"]
    assert capture(url, "as-recorder")[-1] == "response.completed"
    code, output = cli("verify", "--db", url)
    assert code == 0 and output.startswith("ok: 496 events verified")
    # The projections are not the recorder's to read: said, not failed.
    assert "chunks (this database role may not read its tables)" in output
    with EventStore.open(url) as store:
        assert store.find_session("as-recorder").closed
    # Reports need the projection tables, which are not the recorder's.
    code, output = cli("cost", "--db", url)
    assert code == 1 and output.startswith("Error: ") and "permission denied" in output


def test_the_projector_builds_reports_but_cannot_record(role_db: RoleDb) -> None:
    capture(role_db.urls["recorder"], "recorded")
    url = role_db.urls["projector"]
    assert cli("projections", "rebuild", "--db", url)[0] == 0
    code, output = cli("audit", "--db", url, "--json")
    assert code == 0 and len(json.loads(output)["entries"]) == 1
    assert cli("cost", "--db", url)[0] == 0
    assert cli("verify", "--db", url)[0] == 0
    with pytest.raises(CodetapeError, match=_CANNOT_RECORD):
        capture(url, "as-projector")


REPORTS = (
    ["audit"],
    ["cost"],
    ["containers", "--at", "2026-01-01"],  # a fixed time: "now" moves between runs
    ["stages", "recorded"],
    ["chunks", "recorded"],
)


def _report(url: str, report: list[str]) -> dict[str, object]:
    code, output = cli(*report, "--db", url, "--json")
    assert code == 0, (report, output)
    found: dict[str, object] = json.loads(output)
    return found


def test_the_reader_runs_every_report_without_writing(role_db: RoleDb) -> None:
    capture(role_db.urls["recorder"], "recorded")
    reader = role_db.urls["reader"]
    with role_db.admin() as conn:
        # Hardened servers take TEMPORARY from everyone: the reader role holds its own.
        database = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
    # Nothing caught up yet: the reader folds the whole log in, writing nothing.
    folded = {" ".join(r): _report(reader, r) for r in REPORTS}
    assert {r["projections_behind"] for r in folded.values()} == {496}
    code, output = cli("audit", "--db", reader)
    assert code == 0 and "projections 496 events behind the log" in output, output
    with role_db.admin() as conn:
        assert conn.execute("SELECT count(*) FROM pj_checkpoints").fetchone() == (0,)
    # The projector stores the same work: the reports read it, and say nothing is behind.
    assert cli("projections", "catch-up", "--db", role_db.urls["projector"])[0] == 0
    for report in REPORTS:
        stored = _report(reader, report)
        assert stored["projections_behind"] == 0
        assert {**stored, "projections_behind": 496} == {**folded[" ".join(report)]}
    assert cli("verify", "--db", reader)[0] == 0
    assert cli("sessions", "--db", reader)[0] == 0
    with pytest.raises(CodetapeError, match=_CANNOT_RECORD):
        capture(reader, "as-reader")
    with EventStore.open(role_db.owner) as store:
        import_file(store, VERCEL_CI)  # the log moves on...
    moved = _report(reader, ["cost"])  # ...and the reader still sees all of it
    assert moved["projections_behind"] == 398
    with EventStore.open(role_db.owner) as store:
        assert moved == {**P.read_costs(store).value.to_json(), "projections_behind": 398}
    assert len(moved["groups"]) == 2  # type: ignore[arg-type]


# What PostgreSQL says when a privilege is missing (and never for a mistyped statement).
_REFUSALS = ("permission denied", "must be owner", "must be superuser")

FORBIDDEN_ON_THE_LOG = [
    "UPDATE events SET payload = payload",
    "DELETE FROM events",
    "TRUNCATE events",
    "DROP TRIGGER events_no_update_delete ON events",
    "ALTER TABLE events DISABLE TRIGGER USER",
    "ALTER TABLE events ADD COLUMN evil integer",
    "DROP TABLE events",
    "LOCK TABLE events IN ACCESS EXCLUSIVE MODE",
    "CREATE TABLE evil (x integer)",
    "CREATE SCHEMA evil",
    "SET session_replication_role = replica",
    "ALTER ROLE CURRENT_USER SUPERUSER",
    "UPDATE alembic_version SET version_num = 'x'",
    # The key tables are part of the log: changing a key would change every row using it.
    "UPDATE sessions SET public_id = public_id",
    "DELETE FROM exchanges",
    "TRUNCATE names",
    "UPDATE responses SET public_id = 'x'",
]


@pytest.mark.parametrize("role", ROLES)
def test_forbidden_statements_fail_even_with_the_triggers_off(role_db: RoleDb, role: str) -> None:
    capture(role_db.urls["recorder"], "recorded")
    with role_db.admin() as conn:
        # As if an attacker had already got the triggers out of the way.
        conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
    url = role_db.urls[role]
    statements = list(FORBIDDEN_ON_THE_LOG)
    if role != "recorder":
        statements.append(
            "INSERT INTO events SELECT * FROM events WHERE position = 1 ON CONFLICT DO NOTHING"
        )
    if role != "projector":
        statements += ["DELETE FROM pj_checkpoints", "TRUNCATE pj_chunks"]
    if role == "recorder":
        statements.append("SELECT * FROM pj_costs")
    for statement in statements:
        message = refused(url, statement)
        assert any(m in message for m in _REFUSALS), (statement, message)
    with EventStore.open(role_db.owner) as store:
        assert store.verify().ok and store.last_position() == 496


def test_each_role_holds_exactly_its_grants_and_a_rerun_changes_nothing(role_db: RoleDb) -> None:
    def held() -> dict[str, dict[str, set[str]]]:
        with role_db.admin() as conn:
            rows = conn.execute(
                "SELECT grantee, table_name, privilege_type"
                " FROM information_schema.role_table_grants WHERE grantee LIKE %s",
                (f"{role_db.prefix}_%",),
            ).fetchall()
        found: dict[str, dict[str, set[str]]] = {}
        for grantee, table, privilege in rows:
            role = grantee.removeprefix(f"{role_db.prefix}_")
            found.setdefault(role, {}).setdefault(table, set()).add(privilege)
        return found

    expected = {
        role: {table: set(privileges) for table, privileges in grants.items()}
        for role, grants in GRANTS.items()
    }
    assert held() == expected
    assert expected["recorder"] == {
        "alembic_version": {"SELECT"},
        "events": {"SELECT", "INSERT"},
        # The lean row's key tables: an append adds the keys its events need.
        "sessions": {"SELECT", "INSERT"},
        "exchanges": {"SELECT", "INSERT"},
        "responses": {"SELECT", "INSERT"},
        "items": {"SELECT", "INSERT"},
        "names": {"SELECT", "INSERT"},
        "event_rows": {"SELECT"},
        "leases": {"SELECT", "INSERT", "UPDATE", "DELETE"},
    }
    with role_db.admin() as conn:
        # Privileges granted by hand are taken back by the next run.
        conn.execute(f"GRANT UPDATE ON events TO {role_db.prefix}_recorder")
    apply_roles(role_db.owner, role_db.prefix)
    assert held() == expected
    assert capture(role_db.urls["recorder"], "again")[-1] == "response.completed"
    script = roles_sql("codetape")
    assert "GRANT SELECT, INSERT ON events TO codetape_recorder;" in script


def test_roles_need_an_upgraded_database(pg_url: str) -> None:
    code, output = cli("db", "roles", "--db", pg_url)
    assert code == 1 and output.startswith("Error: the database at ")
    assert "the roles need" in output and "codetape db upgrade" in output


def test_roles_on_sqlite_are_one_clear_error(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    with pytest.raises(RoleError, match="PostgreSQL feature"):
        apply_roles(sqlite_url)
    code, output = cli("db", "roles", "--db", sqlite_url)
    assert code == 1 and output.startswith("Error: roles are a PostgreSQL feature")
    code, output = cli("db", "roles", "--prefix", "Bad-Name", "--print")
    assert code == 1 and output.startswith("Error: role prefix")

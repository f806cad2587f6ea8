"""The report commands through click's CliRunner, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from recorder.cli import main
from recorder.store import migrate

ROOT = Path(__file__).resolve().parents[1]
VERCEL_CI = ROOT / "fixtures/realdata/vercel-ai/openai-code-interpreter-tool.1.jsonl"
SESSION = "vercel-ai/openai-code-interpreter-tool.1"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich reads the width at print time; tables would otherwise wrap figures.
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def db(migrated_db_url: str) -> str:
    assert run("import", str(VERCEL_CI), "--db", migrated_db_url).exit_code == 0
    return migrated_db_url


def test_chunks_json_and_terminal(db: str) -> None:
    result = run("chunks", SESSION, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    chunks = json.loads(result.output)["chunks"]
    stages = [
        c["metadata"]["code_interpreter"]["stage"]
        for c in chunks
        if "code_interpreter" in c["metadata"]
    ]
    assert stages.count("completed") == 3
    text = run("chunks", SESSION, "--db", db)
    assert text.exit_code == 0
    assert "code_interpreter started" in text.output
    assert "logs: (2, 12, 69868, 6.9868)" in text.output


def test_stages_say_timing_is_unknown_for_imports(db: str) -> None:
    result = run("stages", SESSION, "--db", db, "--json")
    calls = json.loads(result.output)["calls"]
    assert len(calls) == 3
    assert all(c["code_generation_ms"] is None for c in calls)
    text = run("stages", SESSION, "--db", db)
    assert "unknown, not guessed" in text.output


def test_audit_terminal_and_json(db: str) -> None:
    result = run("audit", "--db", db, "--json")
    entries = json.loads(result.output)["entries"]
    assert [e["code"] for e in entries][2] == "sums[:20]\n"
    assert entries[0]["log_positions"]["vouching"]
    text = run("audit", SESSION, "--db", db)
    assert "sums[:20]" in text.output
    assert "logs:" in text.output


def test_cost_json_csv_and_table(db: str) -> None:
    report = json.loads(run("cost", "--db", db, "--json").output)
    assert report["total"]["total"] == "0.03081907"
    rows = list(
        csv.DictReader(io.StringIO(run("cost", "--by", "model", "--db", db, "--csv").stdout))
    )
    assert rows[0]["key"] == "gpt-5-nano-2025-08-07"
    assert rows[-1]["key"] == "total"
    assert rows[-1]["total"] == "0.03081907"
    table = run("cost", "--db", db)
    assert "$0.03081907" in table.output
    assert "per_container" in table.output
    empty = json.loads(run("cost", "--since", "2026-01-01", "--db", db, "--json").output)
    assert empty["groups"] == []


def test_containers_at_a_time(db: str) -> None:
    active = json.loads(
        run("containers", "--at", "2025-09-11T15:20:00", "--db", db, "--json").output
    )
    [c] = active["containers"]
    assert (c["state"], c["reusable"]) == ("active", True)
    later = json.loads(run("containers", "--at", "2025-09-11T16:00", "--db", db, "--json").output)
    assert later["containers"][0]["state"] == "expired"
    text = run("containers", "--db", db)
    assert "expired" in text.output


def test_projections_rebuild_and_status(db: str) -> None:
    result = run("projections", "rebuild", "--db", db)
    assert result.exit_code == 0
    assert "rebuilt chunks, stages, audit, costs, containers" in result.output
    status = json.loads(run("projections", "status", "--db", db, "--json").output)
    assert {p["behind"] for p in status["projections"]} == {0}
    one = run("projections", "rebuild", "stages", "--db", db)
    assert "rebuilt stages" in one.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("containers", "--at", "yesterday-ish"), "is not a time"),
        (("cost", "--fees", "/nonexistent/fees.json"), "cannot read fee table"),
        (("chunks", "no-such-session"), "no session named"),
    ],
)
def test_user_mistakes_are_one_line_errors(
    sqlite_url: str, args: tuple[str, ...], fragment: str
) -> None:
    migrate.upgrade(sqlite_url)
    result = run(*args, "--db", sqlite_url)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert lines[-1].startswith("Error: ") and fragment in lines[-1], result.output

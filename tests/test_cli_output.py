"""Reports lose nothing at 80 columns or when piped: code, ids, names and positions stay whole.

Each report is read twice: through CliRunner with ``COLUMNS=80``, and from a
real ``codetape`` process whose stdout is a pipe (no terminal, no COLUMNS).
What the ``--json`` form holds must then be found in the text once line
breaks, indentation and box drawing are taken out: wrapping may move
characters to the next line, but never drop one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from recorder.cli import main
from recorder.store import migrate

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures/realdata"
TAPES = [
    FIXTURES / "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl",
    FIXTURES / "vercel-ai/openai-code-interpreter-tool.1.jsonl",
    *sorted((FIXTURES / "pydantic-ai").glob("*code_execution*.jsonl")),
]
_LAYOUT = re.compile(r"[\s│╭╮╰╯─]")


def squash(text: str) -> str:
    return _LAYOUT.sub("", text)


Runner = Callable[..., str]


def narrow(db: str) -> Runner:
    def run(*args: str) -> str:
        result = CliRunner(env={"COLUMNS": "80"}).invoke(
            main, [*args, "--db", db], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result.stdout

    return run


def piped(db: str) -> Runner:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    codetape = str(Path(sys.executable).parent / "codetape")

    def run(*args: str) -> str:
        done = subprocess.run(
            [codetape, *args, "--db", db],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('reports') / 'log.db'}"
    migrate.upgrade(url)
    result = CliRunner().invoke(main, ["import", *map(str, TAPES), "--db", url])
    assert result.exit_code == 0, result.output
    return url


def report(db: str, *args: str) -> dict[str, object] | list[dict[str, object]]:
    result = CliRunner().invoke(main, [*args, "--db", db, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    loaded: dict[str, object] | list[dict[str, object]] = json.loads(result.output)
    return loaded


@pytest.fixture(params=["COLUMNS=80", "piped"])
def text(request: pytest.FixtureRequest, db: str) -> Runner:
    return narrow(db) if request.param == "COLUMNS=80" else piped(db)


def test_audit_keeps_every_code_character_and_the_true_position_range(
    db: str, text: Runner
) -> None:
    entries = report(db, "audit")["entries"]  # type: ignore[index]
    assert max(len(line) for e in entries for line in e["code"].splitlines()) > 80
    assert max(e["log_positions"]["last"] for e in entries) >= 1000
    out = squash(text("audit"))
    for e in entries:
        for line in e["code"].splitlines():
            assert squash(line) in out, line
        first, last = e["log_positions"]["first"], e["log_positions"]["last"]
        assert f"logpositions{first}–{last}(vouching:" in out
        for value in (e["call_id"], e["container_id"], e["response_id"], e["session_id"]):
            assert value and squash(value) in out
    for line in text("audit").splitlines():
        assert "…" not in line


def test_sessions_keep_ids_and_names_whole(db: str, text: Runner) -> None:
    listed = report(db, "sessions")
    out = text("sessions")
    for s in listed:  # type: ignore[union-attr]
        assert str(s["id"]) in out  # an id is never folded: it fits any width
        assert squash(str(s["name"])) in squash(out)
    assert "…" not in out
    # 32-character ids beside 60-character names cannot share 80 columns: one block each.
    assert any(line.startswith("name ") for line in out.splitlines())


def test_containers_cost_and_stages_keep_ids_whole(db: str, text: Runner) -> None:
    containers = report(db, "containers", "--at", "2025-09-26")["containers"]  # type: ignore[index]
    out = squash(text("containers", "--at", "2025-09-26"))
    for c in containers:
        assert c["container_id"] in out
        if c["created_exchange_id"]:
            assert c["created_exchange_id"] in out
    costs = report(db, "cost")
    out = squash(text("cost"))
    for group in costs["groups"]:  # type: ignore[index]
        assert squash(group["key"]) in out
    for possible in costs["possible_unattributed_containers"]:  # type: ignore[index]
        assert possible["exchange_id"] in out
    name = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming"
    calls = report(db, "stages", name)["calls"]  # type: ignore[index]
    out = squash(text("stages", name))
    for call in calls:
        assert call["call_id"] in out


def test_a_wide_table_fits_when_the_terminal_is_wide(db: str) -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["sessions", "--db", db])
    header = result.stdout.splitlines()[0].split()
    assert header[:3] == ["id", "name", "opened"]

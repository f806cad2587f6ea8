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
    # 32-character ids beside 60-character names cannot share 80 columns: one block each
    # (in a pipe, a table at its own width: see below).
    blocks = narrow(db)("sessions")
    assert any(line.startswith("name ") for line in blocks.splitlines())


def test_piped_records_are_one_line_each_never_wrapped(db: str) -> None:
    """With no terminal and no width given, a program reads the output: a table at its
    own width, each record on one line with its id and whole name."""
    listed = report(db, "sessions")
    lines = piped(db)("sessions").splitlines()
    assert lines[0].split()[:3] == ["id", "name", "opened"]
    assert len(lines) == 1 + len(listed)  # type: ignore[arg-type]
    assert max(map(len, lines)) > 80
    for s, line in zip(listed, lines[1:], strict=True):  # type: ignore[arg-type]
        assert line.split()[:2] == [s["id"], s["name"]]


def test_sessions_are_listed_oldest_first_by_when_they_were_opened(
    tmp_path: Path,
) -> None:
    """Import order is not age: a recording from 2025 imported after one from 2026."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    migrate.upgrade(url)
    newer, older = tmp_path / "newer.jsonl", tmp_path / "older.jsonl"
    for path, year, digit in ((newer, 2026, "a"), (older, 2025, "b")):
        lines = TAPES[0].read_text(encoding="utf-8").splitlines()
        out = []
        for line in lines:
            record = json.loads(line)
            record["session"] = digit * 32
            if "exchange" in record:
                record["exchange"] = digit * 31 + "c"
            record["at_ns"] += (year - 2025) * 365 * 86400 * 10**9
            if record["kind"] == "session_open":
                record["meta"]["name"] = path.stem
            out.append(json.dumps(record))
        path.write_text("\n".join(out) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["import", str(newer), str(older), "--db", url])
    assert result.exit_code == 0, result.output
    as_json = [s["name"] for s in report(url, "sessions")]  # type: ignore[index, union-attr]
    assert as_json == ["older", "newer"]
    text = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["sessions", "--db", url]).stdout
    assert [line.split()[1] for line in text.splitlines()[1:]] == ["older", "newer"], text


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


def test_control_characters_in_recorded_strings_are_shown_not_obeyed(tmp_path: Path) -> None:
    """A session name holding an escape sequence, a bidirectional override and a bell:
    every human output shows them as symbols (styled or not, table or line); JSON keeps
    them exactly."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    migrate.upgrade(url)
    name = "evil\x1b[31mRED\x1b[0m\u202etxt.exe\x07"
    tape = tmp_path / "evil.jsonl"
    records = [json.loads(line) for line in TAPES[0].read_text(encoding="utf-8").splitlines()]
    records[0]["meta"]["name"] = name
    tape.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    raw = ("\x1b[31m", "\u202e", "\x07")  # (\x1b[0m is also the styling's own reset)

    def human(*args: str, **env: str) -> str:
        result = CliRunner(env=env).invoke(main, [*args, "--db", url])
        assert result.exit_code == 0, result.output
        return result.stdout

    imported = human("import", str(tape), FORCE_COLOR="1")
    session_id = report(url, "sessions")[0]["id"]  # type: ignore[index]
    assert report(url, "sessions")[0]["name"] == name  # type: ignore[index]
    assert report(url, "show", str(session_id))["name"] == name  # type: ignore[call-overload]
    outputs = [imported]
    for env in ({"COLUMNS": "80"}, {"COLUMNS": "250"}, {"FORCE_COLOR": "1", "COLUMNS": "250"}):
        outputs += [human("sessions", **env), human("show", str(session_id), **env)]
    outputs.append(piped(url)("sessions"))
    for out in outputs:
        assert not any(r in out for r in raw), repr(out)
        assert "␛[31mRED␛[0m" in out, repr(out)

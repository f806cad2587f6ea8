"""The command line, through click's CliRunner: happy paths and one-line errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from recorder.cli import main
from recorder.tape import read_tape

ROOT = Path(__file__).resolve().parents[1]
STREAM_TAPE = (
    ROOT / "fixtures/realdata/openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
)
HTTP_ERROR_TAPE = (
    ROOT / "fixtures/realdata/pydantic-ai/test_openai_responses_model_http_error.jsonl"
)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert lines[-1].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[-1], result.output


@pytest.fixture
def db(migrated_db_url: str) -> str:
    return migrated_db_url


def test_import_show_export_verify(db: str, tmp_path: Path) -> None:
    imported = run("import", str(STREAM_TAPE), str(HTTP_ERROR_TAPE), "--db", db, "--json")
    assert imported.exit_code == 0, imported.output
    report = json.loads(imported.output)
    assert [r["format"] for r in report] == ["tape", "tape"]
    name = report[0]["sessions"][0]["name"]
    assert name == "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming"

    listed = json.loads(run("sessions", "--db", db, "--json").output)
    (stream,) = [s for s in listed if s["name"] == name]
    assert stream["exchanges"] == 1

    shown = run("show", name, "--db", db, "--json")
    detail = json.loads(shown.output)
    (exchange,) = detail["exchanges"]
    assert exchange["status"] == 200 and exchange["outcome"] == "completed"
    kinds = [e["kind"] for e in exchange["events"]]
    assert kinds.count("sse") == 491
    assert exchange["events"][2]["type"] == "response.created"

    text = run("show", name, "--db", db)
    assert "491 SSE events" in text.output
    assert "response.code_interpreter_call_code.delta" in text.output

    out = tmp_path / "out.jsonl"
    exported = run("export", name, "--no-hashes", "-o", str(out), "--db", db)
    assert exported.exit_code == 0
    # Export writes format 2: the same events as the (format 1) fixture, in fewer bytes.
    assert read_tape(out) == read_tape(STREAM_TAPE)
    assert out.read_text().count("\n") == len(read_tape(STREAM_TAPE))
    assert out.stat().st_size < STREAM_TAPE.stat().st_size / 2

    verified = run("verify", "--db", db)
    assert verified.exit_code == 0 and verified.output.startswith("ok: ")


REALDATA = ROOT.parent / "shared" / "realdata"


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not beside this checkout")
@pytest.mark.parametrize(
    ("pattern", "fmt"),
    [
        ("pydantic__pydantic-ai/*_stream.yaml", "vcr"),
        ("openai__openai-dotnet/*Streaming.json", "testproxy"),
        ("vercel__ai/*openai-error.1.chunks.txt", "chunks"),
    ],
)
def test_import_detects_realdata_formats_by_content(
    db: str, tmp_path: Path, pattern: str, fmt: str
) -> None:
    source = sorted(REALDATA.glob(pattern))[0]
    renamed = tmp_path / "no-extension"
    renamed.write_bytes(source.read_bytes())
    result = run("import", str(renamed), "--db", db, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["format"] == fmt
    assert run("verify", "--db", db).exit_code == 0


def test_db_current_reports_state(sqlite_url: str) -> None:
    sqlite3.connect(sqlite_url.removeprefix("sqlite:///")).close()  # an empty database file
    assert "blank" in run("db", "current", "--db", sqlite_url).output
    assert run("db", "upgrade", "--db", sqlite_url).exit_code == 0
    assert "up to date" in run("db", "current", "--db", sqlite_url).output


def test_sessions_on_an_empty_log(db: str) -> None:
    assert "no sessions yet" in run("sessions", "--db", db).output
    assert json.loads(run("sessions", "--db", db, "--json").output) == []


def test_missing_file(db: str) -> None:
    assert_one_line_error(run("import", "/no/such/file.jsonl", "--db", db), "no such file")


def test_unknown_format_is_rejected_with_choices(db: str) -> None:
    result = run("import", str(STREAM_TAPE), "--format", "xml", "--db", db)
    assert result.exit_code == 2
    assert "'xml' is not one of" in result.output


def test_undetectable_file(db: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("hello, I am not a recording\n")
    assert_one_line_error(run("import", str(junk), "--db", db), "cannot tell the format")


def test_corrupt_tape_line_and_nothing_written(db: str, tmp_path: Path) -> None:
    lines = STREAM_TAPE.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:10], '{"kind": "sse", "truncat', *lines[10:]]) + "\n")
    assert_one_line_error(run("import", str(bad), "--db", db), "bad.jsonl:11", "not valid JSON")
    assert json.loads(run("sessions", "--db", db, "--json").output) == []


def test_unreachable_database() -> None:
    result = run("sessions", "--db", "postgresql://nobody@127.0.0.1:1/none")
    assert_one_line_error(result, "cannot reach the PostgreSQL server at 127.0.0.1:1")


def test_database_not_upgraded(sqlite_url: str) -> None:
    assert_one_line_error(run("sessions", "--db", sqlite_url), "codetape db upgrade")


def test_unknown_session(db: str) -> None:
    assert_one_line_error(
        run("show", "nothing-like-it", "--db", db), "no session", "nothing-like-it"
    )
    assert_one_line_error(
        run("export", "nothing-like-it", "-o", "/tmp/never.jsonl", "--db", db), "no session"
    )
    assert not Path("/tmp/never.jsonl").exists()


def test_duplicate_import_is_skipped(db: str) -> None:
    assert run("import", str(STREAM_TAPE), "--db", db).exit_code == 0
    again = run("import", str(STREAM_TAPE), "--db", db)
    assert again.exit_code == 0
    assert "skipped, already imported" in again.output
    assert "already in the database" in again.output
    assert len(json.loads(run("sessions", "--db", db, "--json").output)) == 1


def test_embedded_default_database_is_created_on_first_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODETAPE_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert run("import", str(STREAM_TAPE)).exit_code == 0
    assert (tmp_path / "data" / "codetape" / "codetape.db").is_file()
    assert run("verify").exit_code == 0


def test_env_var_selects_the_database(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODETAPE_DB", db)
    assert run("import", str(STREAM_TAPE)).exit_code == 0
    assert len(json.loads(run("sessions", "--json").output)) == 1


def test_help_explains_commands() -> None:
    out = run("--help").output
    for command in ("import", "export", "verify", "sessions", "show", "db"):
        assert command in out
    assert "CODETAPE_DB" in out

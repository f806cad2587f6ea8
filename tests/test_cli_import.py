"""Imports through the CLI: incomplete and empty sources, copies, several files, foreign formats.

Each case writes nothing it should not: the database's sessions are listed
after every refusal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from recorder.cli import main
from recorder.events import EventKind
from recorder.tape import read_tape

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures/realdata"
STREAM_TAPE = FIXTURES / "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
SMALL_TAPE = FIXTURES / "pydantic-ai/test_openai_responses_model_http_error.jsonl"
VERCEL_TAPE = FIXTURES / "vercel-ai/openai-code-interpreter-tool.1.jsonl"
CHUNKS_NAME = "openai-code-interpreter-tool.1.chunks.txt"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def db(migrated_db_url: str) -> str:
    return migrated_db_url


def sessions(db: str) -> list[dict[str, object]]:
    listed = run("sessions", "--db", db, "--json")
    assert listed.exit_code == 0, listed.output
    result: list[dict[str, object]] = json.loads(listed.output)
    return result


def error_lines(result: Result) -> list[str]:
    assert "Traceback" not in result.output
    return [line for line in result.stderr.splitlines() if line.strip()]


def chunks_lines() -> list[str]:
    """The vercel chunks file the vercel fixture tape was made from: one data line per frame."""
    return [
        ev.payload.decode().split("data: ", 1)[1].rstrip("\n")
        for ev in read_tape(VERCEL_TAPE)
        if ev.kind is EventKind.SSE
    ]


# -- incomplete tapes ---------------------------------------------------------------


def cut_tape(tmp_path: Path, keep: int, name: str = "cut.jsonl") -> Path:
    lines = STREAM_TAPE.read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path / name
    path.write_text("".join(lines[:keep]), encoding="utf-8")
    return path


def test_a_tape_cut_at_a_line_boundary_is_refused(db: str, tmp_path: Path) -> None:
    cut = cut_tape(tmp_path, 300)
    result = run("import", str(cut), "--db", db)
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith(f"Error: {cut} is cut short: ")
    assert "cut short" in line and "exchange #1 (POST" in line and "never ended" in line
    assert "is never closed" in line
    assert "--partial" in line
    assert sessions(db) == []


def test_a_tape_missing_only_its_session_close_is_refused(db: str, tmp_path: Path) -> None:
    lines = STREAM_TAPE.read_text(encoding="utf-8").splitlines(keepends=True)
    assert json.loads(lines[-1])["kind"] == "session_close"
    cut = cut_tape(tmp_path, len(lines) - 1)
    (line,) = error_lines(run("import", str(cut), "--db", db))
    assert (
        "session 'openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming' is never" in line
    )
    assert sessions(db) == []


def test_partial_keeps_a_cut_tape_marked_and_closed(db: str, tmp_path: Path) -> None:
    cut = cut_tape(tmp_path, 300)
    result = run("import", str(cut), "--partial", "--db", db)
    assert result.exit_code == 0, result.output
    assert "kept partial (--partial)" in result.output
    (listed,) = sessions(db)
    assert listed["closed"] is True
    assert "never ended" in str(listed["partial"])
    shown = json.loads(run("show", str(listed["id"]), "--db", db, "--json").output)
    assert "never ended" in shown["metadata"]["partial"]
    (exchange,) = shown["exchanges"]
    assert exchange["outcome"] == "interrupted"
    assert exchange["reason"] == "the imported file ends before this exchange did"
    verified = run("verify", "--db", db)
    assert verified.exit_code == 0
    assert verified.stderr == ""  # nothing left open forever
    assert "partial" in run("show", str(listed["id"]), "--db", db).output


def test_the_full_tape_after_a_partial_one_is_named_a_longer_version(
    db: str, tmp_path: Path
) -> None:
    cut = cut_tape(tmp_path, 300)
    assert run("import", str(cut), "--partial", "--db", db).exit_code == 0
    result = run("import", str(STREAM_TAPE), "--db", db)
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "is a longer version of" in line
    # In events, as the import said (the cut file's 300 lines, ended as interrupted and
    # closed), and the whole file's: not the number of recorded items compared.
    assert "imported from a partial copy (the log holds 302 events of it, this file 496)" in line
    assert len(sessions(db)) == 1


def test_a_cut_copy_of_an_imported_tape_is_skipped(db: str, tmp_path: Path) -> None:
    assert run("import", str(STREAM_TAPE), "--db", db).exit_code == 0
    result = run("import", str(cut_tape(tmp_path, 300)), "--db", db)
    assert result.exit_code == 0
    assert "skipped, already imported: a longer version of session" in result.output
    assert len(sessions(db)) == 1


# -- incomplete vercel chunks files -------------------------------------------------


def write_chunks(directory: Path, lines: list[str]) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / CHUNKS_NAME
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_chunks_file_cut_short_is_refused_then_kept_with_partial(db: str, tmp_path: Path) -> None:
    lines = chunks_lines()
    cut = write_chunks(tmp_path / "cut", lines[: len(lines) // 2])
    result = run("import", str(cut), "--db", db)
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert "cut short" in line and "stops before its final event" in line
    assert sessions(db) == []

    kept = run("import", str(cut), "--partial", "--db", db)
    assert kept.exit_code == 0, kept.output
    (listed,) = sessions(db)
    assert "stops before its final event" in str(listed["partial"])

    # The whole file is the same recording, longer: not a second session.
    full = write_chunks(tmp_path / "full", lines)
    again = run("import", str(full), "--db", db)
    assert again.exit_code == 1
    (line,) = error_lines(again)
    assert "is a longer version of" in line and str(listed["id"]) in line
    assert len(sessions(db)) == 1
    audit = json.loads(run("audit", "--db", db, "--json").output)["entries"]
    assert len({e["call_id"] for e in audit}) == len(audit)  # no call counted twice


def test_the_whole_chunks_file_first_then_a_cut_copy_is_skipped(db: str, tmp_path: Path) -> None:
    lines = chunks_lines()
    assert run("import", str(write_chunks(tmp_path / "full", lines)), "--db", db).exit_code == 0
    cut = write_chunks(tmp_path / "cut", lines[:100])
    result = run("import", str(cut), "--db", db)
    assert result.exit_code == 0
    assert "skipped, already imported: a longer version" in result.output
    assert len(sessions(db)) == 1


# -- nothing to import ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        (
            "empty.yaml",
            "interactions: []\nversion: 1\n",
            "holds no interactions: nothing to import",
        ),
        ("empty.json", '{"Entries": [], "Variables": {}}', "holds no entries: nothing to import"),
    ],
)
def test_sources_with_nothing_to_import_are_refused(
    db: str, tmp_path: Path, name: str, text: str, fragment: str
) -> None:
    source = tmp_path / name
    source.write_text(text)
    result = run("import", str(source), "--db", db)
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert fragment in line
    assert sessions(db) == []


# -- several files, one bad -------------------------------------------------------------


def test_several_files_one_bad_goes_on_with_the_others(db: str, tmp_path: Path) -> None:
    assert run("import", str(SMALL_TAPE), "--db", db).exit_code == 0
    bad = tmp_path / "bad.jsonl"
    lines = VERCEL_TAPE.read_text(encoding="utf-8").splitlines(keepends=True)
    bad.write_text("".join([*lines[:10], '{"kind": "sse", "trunc\n', *lines[10:]]))
    result = run(
        "import", str(STREAM_TAPE), str(bad), str(SMALL_TAPE), str(VERCEL_TAPE), "--db", db
    )
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    assert out[0].startswith(f"{STREAM_TAPE}: imported (tape, 496 events) -> ")
    assert out[1].startswith(f"{SMALL_TAPE}: skipped, already imported: session ")
    assert out[2].startswith(f"{VERCEL_TAPE}: imported (tape, ")
    assert out[3] == "4 files: 2 imported, 1 skipped (already imported), 1 failed"
    errors = error_lines(result)
    assert errors[0] == f"Error: {bad}:11: not valid JSON (Invalid control character at column 23)"
    assert errors[-1] == "Error: 1 of 4 file(s) failed to import"
    assert len(sessions(db)) == 3


def test_several_files_json(db: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    result = run("import", str(SMALL_TAPE), str(missing), str(SMALL_TAPE), "--db", db, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [r["status"] for r in report] == ["imported", "failed", "duplicate"]
    assert report[0]["events"] == 6 and report[0]["sessions"][0]["name"]
    assert "no such file" in report[1]["error"]
    assert "already in the database" in report[2]["error"]
    assert json.loads(result.stderr) == {"error": "1 of 3 file(s) failed to import"}


def test_a_directory_is_named(db: str, tmp_path: Path) -> None:
    (line,) = error_lines(run("import", str(tmp_path), "--db", db))
    assert line == f"Error: {tmp_path} is a directory: name the files in it to import"


# -- formats that are not supported, or not tapes ---------------------------------------

GO_VCR = """---
version: 2
interactions:
- id: 0
  request:
    proto: HTTP/1.1
    body: '{"model":"gpt-5"}'
    url: https://api.openai.com/v1/responses
    method: POST
  response:
    proto: HTTP/2.0
    body: '{"object":"response"}'
    status: 200 OK
    code: 200
    duration: 1.2s
"""


def test_a_go_vcr_cassette_is_named(db: str, tmp_path: Path) -> None:
    cassette = tmp_path / "TestResponses.yaml"
    cassette.write_text(GO_VCR)
    (line,) = error_lines(run("import", str(cassette), "--db", db))
    assert "is a go-vcr cassette (version 2): go-vcr cassettes are not supported" in line
    v1 = tmp_path / "v1.yaml"
    v1.write_text(GO_VCR.replace("version: 2", "version: 1"))
    (line,) = error_lines(run("import", str(v1), "--db", db))
    assert "go-vcr cassettes are not supported" in line


TEST_PROXY = {
    "Entries": [
        {
            "RequestUri": "https://api.openai.com/v1/responses",
            "RequestMethod": "POST",
            "RequestHeaders": {"Content-Type": "application/json"},
            "RequestBody": {"model": "gpt-5"},
            "StatusCode": 200,
            "ResponseHeaders": {"Content-Type": "application/json"},
            "ResponseBody": {"object": "response", "status": "completed"},
        }
    ],
    "Variables": {},
}


@pytest.mark.parametrize("command", [("serve",), ("diff", "{tape}")])
def test_serve_and_diff_name_an_importable_file(tmp_path: Path, command: tuple[str, ...]) -> None:
    recording = tmp_path / "Responses.json"
    recording.write_text(json.dumps(TEST_PROXY))
    args = [*(a.format(tape=SMALL_TAPE) for a in command), str(recording)]
    result = run(*args, "--db", f"sqlite:///{tmp_path / 'unused.db'}")
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line == (
        f"Error: {recording} is a test-proxy recording, not a tape: import it first with "
        f"`codetape import {recording}`, then give the session's name"
    )
    cassette = tmp_path / "cassette.yaml"
    cassette.write_text(
        "interactions:\n- request: {method: POST, uri: 'https://api.openai.com/v1/responses',"
        " body: '{}', headers: {}}\n  response: {status: {code: 200, message: OK},"
        " headers: {}, body: {string: '{}'}}\nversion: 1\n"
    )
    (line,) = error_lines(run(*[*args[:-1], str(cassette)]))
    assert "is a VCR cassette, not a tape: import it first" in line


@pytest.mark.parametrize("command", [("serve",), ("diff", "{tape}")])
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (GO_VCR, "go-vcr cassettes are not supported; codetape imports VCR.py cassettes"),
        ("interactions: []\nversion: 1\n", "the cassette holds no interactions"),
    ],
)
def test_serve_and_diff_say_why_a_file_cannot_be_imported_either(
    tmp_path: Path, command: tuple[str, ...], content: str, reason: str
) -> None:
    # "Import it first" would send the user to an import that refuses the file.
    cassette = tmp_path / "TestResponses.yaml"
    cassette.write_text(content)
    args = [*(a.format(tape=SMALL_TAPE) for a in command), str(cassette)]
    result = run(*args, "--db", f"sqlite:///{tmp_path / 'unused.db'}")
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith(f"Error: {cassette} is not a tape, and cannot be imported: ")
    assert reason in line
    as_json = run(*args, "--db", f"sqlite:///{tmp_path / 'unused.db'}", "--json")
    if command[0] == "diff":  # serve has no --json
        assert reason in json.loads(as_json.stderr)["error"]

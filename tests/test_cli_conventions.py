"""Conventions every command keeps: ambiguous names refused, --json errors, shared options, help."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from recorder import ingest
from recorder import projections as P
from recorder.cli import cost_cmd, load_all, main, projection_cmds, transfer_cmds
from recorder.store import migrate

ROOT = Path(__file__).resolve().parents[1]
TAPE = ROOT / "fixtures/realdata/vercel-ai/openai-code-interpreter-tool.1.jsonl"
NAME = "vercel-ai/openai-code-interpreter-tool.1"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def same_name_copy(path: Path) -> Path:
    """Another recording (new ids, no source) under the same session name."""
    lines = []
    for line in TAPE.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record["session"] = "f" * 32
        if "exchange" in record:
            record["exchange"] = "e" * 32
        if record["kind"] == "session_open":
            record["meta"].pop("source")
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def db(migrated_db_url: str, tmp_path: Path) -> str:
    assert (
        run(
            "import",
            str(TAPE),
            str(same_name_copy(tmp_path / "again.jsonl")),
            "--db",
            migrated_db_url,
        ).exit_code
        == 0
    )
    return migrated_db_url


# -- ambiguous names ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("show", NAME),
        ("export", NAME, "-o", "never.jsonl"),
        ("chunks", NAME),
        ("stages", NAME),
        ("audit", NAME),
        ("repair", "--session", NAME),
        ("serve", NAME),
        ("diff", NAME, NAME),
    ],
)
def test_two_sessions_with_one_name_are_refused_with_their_ids(
    db: str, args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ids = [s["id"] for s in json.loads(run("sessions", "--db", db, "--json").output)]
    assert len(ids) == 2
    result = run(*args, "--db", db)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: ")
    assert f"2 sessions are named {NAME!r}: give one's id instead" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ids
    assert all("opened" in line for line in lines[1:])
    assert not (tmp_path / "never.jsonl").exists()


def test_an_ambiguous_name_under_json(db: str) -> None:
    result = run("show", NAME, "--db", db, "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    error = json.loads(result.stderr)
    assert "2 sessions are named" in error["error"]
    assert len(error["candidates"]) == 2
    one = error["candidates"][0]["id"]
    assert json.loads(run("show", one, "--db", db, "--json").output)["id"] == one


# -- errors under --json --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("show", "nope", "--json"), 1, "no session named"),
        (("cost", "--json", "--csv"), 2, "choose one of --json and --csv"),
        (("import", "/no/such.jsonl", "--json"), 1, "1 of 1 file(s) failed"),
        (("import", str(TAPE), "--format", "xml", "--json"), 2, "'xml' is not one of"),
        (("sessions", "--json", "--no-such-option"), 2, "No such option"),
        (("containers", "--at", "soon", "--json"), 2, "is not a time"),
        (("db", "current", "--json", "--db", "sqlite:///no/such/x.db"), 1, "no such database"),
    ],
)
def test_errors_under_json_are_a_json_object_on_stderr(
    sqlite_url: str, args: tuple[str, ...], code: int, fragment: str
) -> None:
    migrate.upgrade(sqlite_url)
    result = run(*args, "--db", sqlite_url) if "--db" not in args else run(*args)
    assert result.exit_code == code
    error = json.loads(result.stderr)
    assert set(error) == {"error"} and fragment in error["error"]


def test_projections_rebuild_json(db: str) -> None:
    result = run("projections", "rebuild", "--db", db, "--json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["rebuilt"] == list(P.NAMES)
    assert report["events_consumed"] > 0


# -- shared options -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["proxy", "serve"])
def test_listen_is_one_option_for_both_servers(command: str) -> None:
    help_text = " ".join(run(command, "--help").output.split())
    assert "--listen HOST:PORT" in help_text
    assert "Address to listen on (port 0 picks a free one)." in help_text
    args = [command, "tape.jsonl"] if command == "serve" else [command]
    result = run(*args, "--listen", "nonsense")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "Error: Invalid value for '--listen': wants HOST:PORT (e.g. 127.0.0.1:8080; "
        "port 0 picks a free one), got 'nonsense'"
    )


@pytest.mark.parametrize(
    ("command", "option"), [("containers", "--at"), ("cost", "--since"), ("cost", "--until")]
)
def test_time_options_say_which_formats_they_take(command: str, option: str) -> None:
    help_text = " ".join(run(command, "--help").output.split())
    found = re.search(rf"{option} TIME (.*?)(?: --|$)", help_text)
    assert found is not None, help_text
    for form in ("now", "2026-03-31", "ISO 8601", "UTC"):
        assert form in found.group(1)


def test_the_cli_constants_match_the_library() -> None:
    # The CLI spells these out so that starting it does not import the library.
    assert transfer_cmds.FORMATS == ingest.FORMATS
    assert cost_cmd.GROUPINGS == P.GROUPINGS
    assert projection_cmds.NAMES == P.NAMES


# -- no internal references in user-facing text -------------------------------------------


def _all_help(group: click.Group, path: list[str]) -> list[str]:
    texts = [run(*path, "--help").output]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            texts += _all_help(command, [*path, name])
        else:
            texts.append(run(*path, name, "--help").output)
    return texts


def test_help_and_readme_speak_of_the_product_only() -> None:
    load_all()  # the group imports command modules only when run: walk every one
    texts = _all_help(main, [])
    assert len(texts) > 15
    texts.append((ROOT / "README.md").read_text(encoding="utf-8"))
    texts.append((ROOT / "recorder/projections/container_fees.json").read_text())
    for text in texts:
        for pattern in (r"\bissue \d", r"seed document", r"\bseed client"):
            assert not re.search(pattern, text, re.IGNORECASE), (pattern, text[:200])


def test_codetape_alone_prints_the_usage_not_an_error() -> None:
    result = run()
    assert result.stderr.startswith("Usage: ")
    assert "Error" not in result.stderr
    unknown = run("nosuch")
    assert unknown.exit_code == 2
    assert unknown.stderr == "Error: No such command 'nosuch'. (see `codetape --help`)\n"

"""The published formats: pydantic models, shipped JSON Schemas, and the output that follows them.

Every report's ``--json`` output (on SQLite and PostgreSQL, over real
fixture recordings) validates against its format; the shipped schema files
are what the models generate; ``codetape schema`` prints them; a document
that strays from its model is refused; every ``--json`` error is one JSON
object on stderr; fee-file errors name the line and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pydantic import ValidationError

from recorder.cli import main
from recorder.formats import FORMATS, check, model, schema_text, shipped_schema
from recorder.ingest import import_file
from recorder.projections.fees import FeeTableError, load_fee_table
from recorder.store import EventStore, migrate

TAPES = (
    "fixtures/realdata/vercel-ai/openai-code-interpreter-tool.1.jsonl",
    "fixtures/realdata/pydantic-ai/test_openai_responses_code_execution_return_image_stream.jsonl",
    "fixtures/realdata/pydantic-ai/test_openai_responses_code_execution_download_file.jsonl",
    "fixtures/realdata/pydantic-ai/test_openai_responses_model_http_error.jsonl",
    "fixtures/realdata/vercel-ai/openai-error.1.jsonl",
)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_shipped_schema_is_what_the_model_generates(name: str) -> None:
    assert shipped_schema(name) == schema_text(name)
    assert run("schema", name).stdout == shipped_schema(name)


def test_schema_lists_every_format_and_refuses_an_unknown_one() -> None:
    listed = run("schema")
    assert listed.exit_code == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(FORMATS)
    unknown = run("schema", "nope")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("Error: no format named 'nope': choose from tape-line")


def test_a_document_that_strays_from_its_format_is_refused() -> None:
    good = {"session_id": None, "entries": [], "projections_behind": 0}
    check("audit", good)
    for bad in (
        {**good, "surprise": 1},  # a field the schema does not publish
        {**good, "projections_behind": "0"},  # a number as a string
        {"session_id": None, "entries": []},  # a field left out
    ):
        with pytest.raises(ValidationError):
            check("audit", bad)


@pytest.fixture
def recorded(db_url: str, tmp_path: Path) -> tuple[str, list[str], Path]:
    migrate.upgrade(db_url)
    with EventStore.open(db_url) as store:
        for tape in TAPES:
            import_file(store, tape)
        sessions = [s.id for s in store.sessions()]
    exported = tmp_path / "export.jsonl"
    result = run("export", sessions[0], "-o", str(exported), "--db", db_url)
    assert result.exit_code == 0, result.output
    return db_url, sessions, exported


def _valid(name: str, result: Result) -> Any:
    assert result.exit_code in (0, 1), result.output
    model(name).model_validate_json(result.stdout)
    return json.loads(result.stdout)


def test_every_reports_json_follows_its_format(recorded: tuple[str, list[str], Path]) -> None:
    db, sessions, exported = recorded
    assert len(_valid("sessions", run("sessions", "--db", db, "--json"))) == len(TAPES)
    for sid in sessions:
        _valid("show", run("show", sid, "--db", db, "--json"))
        _valid("chunks", run("chunks", sid, "--db", db, "--json"))
        _valid("stages", run("stages", sid, "--db", db, "--json"))
    for by in ("session", "day", "model", "label"):
        _valid("cost", run("cost", "--by", by, "--db", db, "--json"))
    assert _valid("containers", run("containers", "--db", db, "--json"))["containers"]
    _valid("containers-advise", run("containers", "--advise", "--db", db, "--json"))
    assert _valid("audit", run("audit", "--db", db, "--json"))["entries"]
    assert _valid("verify", run("verify", "--db", db, "--json"))["ok"]
    assert _valid("verify-tape", run("verify", str(exported), "--json"))["ok"]
    diff = _valid("diff", run("diff", sessions[0], sessions[1], "--db", db, "--json"))
    assert diff["same"] is False
    assert _valid("diff", run("diff", str(exported), sessions[0], "--db", db, "--json"))["same"]


@pytest.mark.parametrize(
    "args",
    [
        ("show", "nope"),
        ("chunks", "nope"),
        ("stages", "nope"),
        ("audit", "nope"),
        ("cost", "--since", "yesterday-ish"),
        ("containers", "--at", "soon"),
        ("cost", "--by", "nothing"),
        ("verify", "no-such-tape.jsonl"),
        ("diff", "nope", "nada"),
        ("sessions", "--db", ""),
    ],
)
def test_every_json_error_is_one_object_on_stderr(sqlite_url: str, args: tuple[str, ...]) -> None:
    migrate.upgrade(sqlite_url)
    result = (
        run(*args, "--db", sqlite_url, "--json") if "--db" not in args else run(*args, "--json")
    )
    assert result.exit_code in (1, 2)
    assert result.stdout == ""
    error = json.loads(result.stderr)
    model("error").model_validate(error)
    assert isinstance(error["error"], str) and error["error"]


def test_fee_file_errors_name_the_line_and_the_field(tmp_path: Path) -> None:
    fees = tmp_path / "fees.json"
    fees.write_text(
        "{\n"
        '  "as_of": "2026-01-01",\n'
        '  "periods": [\n'
        '    {"rule": "per_container", "prices": {"1g": "0.03"}},\n'
        '    {"rule": "per_minute",\n'
        '     "minimum_minutes": -5,\n'
        '     "prices": {"1g": "0.001"}}\n'
        "  ]\n"
        "}\n"
    )
    with pytest.raises(FeeTableError, match=r"fees.json:6: field 'periods\[1\].minimum_minutes'"):
        load_fee_table(fees)
    fees.write_text(
        '{"periods": [{"rule": "per_minute", "prices": {"1g": 1}, "sesion_minutes": 5}]}'
    )
    with pytest.raises(FeeTableError, match=r"fees.json:1: field 'periods\[0\].sesion_minutes'"):
        load_fee_table(fees)
    result = run("cost", "--fees", str(fees), "--json")
    assert result.exit_code == 1
    assert "periods[0].sesion_minutes" in json.loads(result.stderr)["error"]


def test_the_shipped_fee_table_follows_its_format() -> None:
    text = (Path(__file__).parents[1] / "recorder/projections/container_fees.json").read_text()
    model("fees").model_validate_json(text)
    assert load_fee_table().periods

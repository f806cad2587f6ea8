"""A fast start: help texts import none of SQLAlchemy, the openai SDK or pydantic.

Checked in a fresh interpreter through ``sys.modules`` (not by timing); the
command table that ``codetape --help`` reads is checked against the commands.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from recorder.cli import load_all, main
from recorder.cli.commands import COMMANDS
from recorder.store import migrate

HEAVY = ("sqlalchemy", "openai", "pydantic", "psycopg", "httpx2", "rich")

_PROBE = """
import json, sys
heavy = json.loads(sys.argv[2])
sys.argv = ["codetape", *json.loads(sys.argv[1])]
from recorder.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))), file=sys.stderr)
"""


def imported_by(*args: str, heavy: tuple[str, ...] = HEAVY) -> tuple[str, list[str]]:
    """Run ``codetape ARGS`` in a fresh interpreter: (stdout, ``heavy`` packages imported)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(args)), json.dumps(heavy)],
        capture_output=True,
        text=True,
        check=True,
    )
    found: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return done.stdout, found


def test_help_imports_no_library() -> None:
    output, heavy = imported_by("--help")
    assert "Commands:" in output and "sessions" in output
    assert heavy == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_commands_help_imports_no_database_or_sdk(name: str) -> None:
    output, heavy = imported_by(name, "--help")
    assert output.startswith(f"Usage: codetape {name}")
    # rich draws some help-free output only; help itself needs none of these.
    assert heavy == []


def test_schemas_print_without_pydantic() -> None:
    output, heavy = imported_by("schema", "cost")
    assert json.loads(output)["title"] == "CostReport"
    assert heavy == []


def test_listing_sessions_imports_no_database_library(tmp_path: Path) -> None:
    # codetape sessions reads a SQLite log through the stdlib driver (see
    # recorder.store.plain_read); tests/test_plain_read.py checks PostgreSQL.
    url = f"sqlite:///{tmp_path / 'log.db'}"
    migrate.upgrade(url)
    # The user's data directory (platformdirs) matters only when no --db is given.
    output, heavy = imported_by("sessions", "--db", url, heavy=(*HEAVY, "platformdirs"))
    assert output.startswith("no sessions yet")
    assert heavy == []  # an empty log needs no table either, so no rich


def test_running_a_command_imports_what_it_needs() -> None:
    # The probe itself can see a heavy import: without this, the tests above could not fail.
    _output, heavy = imported_by("db", "current", "--db", "sqlite:///:memory:")
    assert "sqlalchemy" in heavy


def test_the_command_table_matches_the_commands() -> None:
    load_all()
    assert set(main.commands) == set(COMMANDS)
    for name, command in main.commands.items():
        module, help_line = COMMANDS[name]
        assert command.callback is not None
        assert command.callback.__module__ == f"recorder.cli.{module}", name
        stand_in = click.Command(name, help=help_line)
        assert stand_in.get_short_help_str(10_000) == command.get_short_help_str(10_000), name

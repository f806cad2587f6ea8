"""Reports read without writing: stored projections plus the log's tail, folded in memory.

A read-only SQLite file (chmod, and for root also the immutable flag, since
root ignores file modes), a ``mode=ro`` URI, and a report while another
connection holds SQLite's write lock all give the reports, with how far
behind the stored projections are; the fold equals a stored catch-up on
both backends. (The PostgreSQL reader role: tests/test_roles.py.)
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recorder import projections as P
from recorder.cli import main
from recorder.ingest import import_file
from recorder.store import EventStore, migrate

TAPES = (
    "fixtures/realdata/vercel-ai/openai-code-interpreter-tool.1.jsonl",
    "fixtures/realdata/pydantic-ai/test_openai_responses_code_execution_return_image_stream.jsonl",
    "fixtures/realdata/pydantic-ai/test_openai_responses_stream.jsonl",
)
REPORTS = (
    ("audit",),
    ("cost",),
    ("cost", "--by", "model"),
    ("containers", "--at", "2026-01-01"),
    ("containers", "--advise"),
)


def fill(url: str) -> list[str]:
    """Import the tapes into a fresh database at ``url``; the session ids."""
    migrate.upgrade(url)
    with EventStore.open(url) as store:
        for tape in TAPES:
            import_file(store, tape)
        return [s.id for s in store.sessions()]


def report(url: str, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, [*args, "--db", url, "--json"])
    assert result.exit_code == 0, (args, result.output)
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def every_report(url: str, sessions: list[str]) -> dict[str, dict[str, Any]]:
    found = {" ".join(r): report(url, *r) for r in REPORTS}
    for sid in sessions:
        for name in ("chunks", "stages"):
            found[f"{name} {sid}"] = report(url, name, sid)
    return found


def without_lag(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in r.items() if f != "projections_behind"} for k, r in found.items()}


def stored_checkpoints(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM pj_checkpoints").fetchone()[0])


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[str], int]:
    path = tmp_path / "codetape.db"
    sessions = fill(f"sqlite:///{path}")
    with EventStore.open(f"sqlite:///{path}") as store:
        head = store.last_position()
    return path, sessions, head


@pytest.fixture
def read_only_file(filled: tuple[Path, list[str], int]) -> Iterator[tuple[Path, list[str], int]]:
    path = filled[0]
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    immutable = os.geteuid() == 0  # root writes through any file mode
    if immutable:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        with (
            pytest.raises(sqlite3.OperationalError, match="readonly"),
            sqlite3.connect(path) as conn,
        ):
            conn.execute("CREATE TABLE proof (x)")
        yield filled
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_every_report_reads_a_read_only_file(read_only_file: tuple[Path, list[str], int]) -> None:
    path, sessions, head = read_only_file
    found = every_report(f"sqlite:///{path}", sessions)
    assert {r["projections_behind"] for r in found.values()} == {head}
    assert len(found["audit"]["entries"]) > 0
    assert found["cost"]["total"]["exchanges"] >= len(TAPES)
    text = CliRunner().invoke(main, ["cost", "--db", f"sqlite:///{path}"])
    assert text.exit_code == 0
    assert f"projections {head:,} events behind the log" in text.stderr
    assert stored_checkpoints(path) == 0  # nothing was written


def test_a_mode_ro_uri_reads_and_the_fold_equals_a_catch_up(
    filled: tuple[Path, list[str], int],
) -> None:
    path, sessions, head = filled
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    folded = every_report(read_only, sessions)
    assert {r["projections_behind"] for r in folded.values()} == {head}
    assert stored_checkpoints(path) == 0
    caught_up = CliRunner().invoke(main, ["projections", "catch-up", "--db", f"sqlite:///{path}"])
    assert caught_up.exit_code == 0, caught_up.output
    stored = every_report(read_only, sessions)
    assert {r["projections_behind"] for r in stored.values()} == {0}
    assert without_lag(stored) == without_lag(folded)


def test_a_report_while_a_recording_holds_the_write_lock(
    filled: tuple[Path, list[str], int],
) -> None:
    path, sessions, head = filled
    # A short busy timeout: a report that wanted the lock would fail at once.
    url = f"sqlite:///{path}?timeout=0.2"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        found = every_report(url, sessions)
        assert {r["projections_behind"] for r in found.values()} == {head}
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize("stored_until", [1, 137, 400])
def test_folding_from_any_checkpoint_equals_the_stored_catch_up(
    db_url: str, stored_until: int
) -> None:
    fill(db_url)
    with EventStore.open(db_url) as store:
        head = store.last_position()
        P.catch_up(store, until=stored_until)
        reads = {
            "audit": P.read_audit(store),
            "stages": P.read_stages(store),
            "containers": P.read_containers(store),
            "costs": P.read_costs(store, by="model"),
        }
        sid = store.sessions()[0].id
        reads["chunks"] = P.read_chunks(store, sid)
        assert {r.behind for r in reads.values()} == {head - stored_until}
        assert {r.head for r in reads.values()} == {head}
        assert P.checkpoints(store)["audit"][0] == stored_until  # the fold stored nothing
        P.catch_up(store)
        assert P.audit(store) == reads["audit"].value
        assert P.stages(store) == reads["stages"].value
        assert P.containers(store) == reads["containers"].value
        assert P.costs(store, by="model").to_json() == reads["costs"].value.to_json()
        assert P.chunks(store, sid) == reads["chunks"].value
        assert P.read_audit(store).behind == 0

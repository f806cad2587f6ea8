"""`verify` and a verified report check the projection tables against the log, on both backends.

The projection tables are ordinary tables (a projection rewrites its rows),
so anyone who can write the database can change what `audit` or a report
shows without touching a hashed row. These tests change them the way such a
person would, with plain SQL, and expect every change found, named, and
undone by a rebuild.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recorder import projections as P
from recorder.cli import main
from recorder.ingest import import_file
from recorder.projections.check import check_projections
from recorder.report.gather import seal
from recorder.store import EventStore

REALDATA = Path(__file__).resolve().parents[1] / "fixtures" / "realdata"
TAPES = [
    REALDATA / "openai-dotnet" / "ResponsesToolTests" / "CodeInterpreterToolStreaming.jsonl",
    *sorted((REALDATA / "pydantic-ai").rglob("*.jsonl"))[:2],
]


def _sql(store: EventStore, sql: str) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql(sql)


def _built(store: EventStore) -> EventStore:
    # Caught up file by file: stored rows made by several catch-ups must
    # match one fold from the first position.
    for tape in TAPES:
        import_file(store, tape)
        P.catch_up(store)
    return store


def _verify(store: EventStore, *args: str) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(main, ["verify", "--db", store.url, "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def test_untouched_projections_match_the_log(store: EventStore) -> None:
    _built(store)
    checks = check_projections(store)
    head = store.last_position()
    assert [(c.name, c.status, c.position) for c in checks] == [
        (name, "ok", head) for name in ("chunks", "stages", "audit", "costs", "containers")
    ]
    code, out = _verify(store)
    assert code == 0 and out["ok"] is True
    assert [p["status"] for p in out["projections"]] == ["ok"] * 5  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "sql", "extra", "missing"),
    [
        ("audit", "UPDATE pj_audit SET code = 'import os; os.system(\"x\")'", None, None),
        ("audit", "UPDATE pj_audit SET container_id = 'cntr_forged'", None, None),
        (
            "chunks",
            "DELETE FROM pj_chunks WHERE part = 0 AND position = "
            "(SELECT MIN(position) FROM pj_chunks)",
            0,
            1,
        ),
    ],
)
def test_an_edited_projection_table_fails_verify(
    store: EventStore, name: str, sql: str, extra: int | None, missing: int | None
) -> None:
    _built(store)
    _sql(store, sql)
    changed = {c.name: c for c in check_projections(store)}
    bad = changed[name]
    assert bad.status == "differs" and not bad.ok
    assert bad.problems and bad.problems[0].startswith(f"pj_{name}")
    if extra is not None:
        assert f"{extra} stored row(s)" in bad.problems[0]
        assert f"{missing} row(s) the log gives" in bad.problems[0]
    assert [c.name for c in changed.values() if not c.ok] == [name]
    code, out = _verify(store)
    assert code == 1 and out["ok"] is False
    result = CliRunner().invoke(main, ["verify", "--db", store.url])
    assert result.exit_code == 1
    assert f"projection {name}: pj_{name}" in result.stderr
    assert "codetape projections rebuild" in result.stderr
    # The log itself is sound, and --no-projections says only that.
    code, out = _verify(store, "--no-projections")
    assert code == 0 and out["ok"] is True and out["projections"] is None
    # A rebuild replaces them from the log.
    P.rebuild(store, [name])
    assert all(c.ok for c in check_projections(store))


def test_an_added_row_and_an_edited_state_are_found(store: EventStore) -> None:
    _built(store)
    _sql(
        store,
        "INSERT INTO pj_container_files (container_id, file_id, filename, source, "
        "first_position, exchange_id) VALUES ('cntr_forged', 'cfile_forged', 'payload.sh', "
        "'annotation', 1, 'x')",
    )
    _sql(
        store, "UPDATE pj_checkpoints SET state = '{\"x\": {\"forged\": 1}}' WHERE name = 'stages'"
    )
    found = {c.name: c for c in check_projections(store)}
    assert found["containers"].status == "differs"
    assert (
        "pj_container_files: 1 stored row(s) the log does not give, 0 row(s)"
        in (found["containers"].problems[0])
    )
    assert found["stages"].problems == ("its checkpoint's state is not the one the log gives",)
    assert found["audit"].ok and found["chunks"].ok


def test_a_verified_report_says_the_projections_fail(store: EventStore) -> None:
    _built(store)
    assert seal(store, verify=True).ok is True
    _sql(store, "UPDATE pj_audit SET code = 'forged'")
    sealed = seal(store, verify=True)
    assert sealed.ok is False
    assert any(p.startswith("projection audit: pj_audit") for p in sealed.problems)


def test_what_is_not_checked_is_said(store: EventStore) -> None:
    import_file(store, TAPES[0])
    assert {c.status for c in check_projections(store)} == {"not_built"}
    P.catch_up(store, ["audit"])
    _sql(store, "UPDATE pj_checkpoints SET version = version + 100 WHERE name = 'audit'")
    P.catch_up(store, ["chunks"])
    found = {c.name: c for c in check_projections(store)}
    assert found["audit"].status == "other_version" and found["audit"].ok
    assert found["chunks"].status == "ok"
    assert found["costs"].status == "not_built"
    result = CliRunner().invoke(main, ["verify", "--db", store.url])
    assert result.exit_code == 0
    assert "ok: 1 projection(s) match the log; not checked: stages (never built)" in (result.stdout)
    assert "audit (written by another version of its code" in result.stdout

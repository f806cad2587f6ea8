"""Container state projection on SQLite and PostgreSQL: creation, reuse, files, state at T."""

from __future__ import annotations

from pathlib import Path

from recorder import projections as P
from recorder.ingest import import_file
from recorder.store import EventStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "realdata"
SECOND = 10**9
MINUTE = 60 * SECOND


def test_auto_container_creation_files_and_idle_rule(store: EventStore) -> None:
    import_file(store, FIXTURES / "vercel-ai" / "openai-code-interpreter-tool.1.jsonl")
    [c] = P.containers(store)
    assert c.container_id == "cntr_68c2e6f380d881908a57a82d394434ff02f484f5344062e9"
    assert (c.created_via, c.memory, c.calls, c.exchanges) == ("auto", "1g", 3, 1)
    assert c.created_exchange_id is not None
    assert [(f.filename, f.source) for f in c.files] == [("roll2dice_sums_10000.csv", "citation")]
    last = c.last_activity_ns
    assert last == 1757603567 * SECOND
    assert c.state_at(last + 19 * MINUTE)[:2] == ("active", True)
    assert c.state_at(last + 20 * MINUTE)[:2] == ("expired", False)
    assert c.state_at(last - MINUTE)[0] == "not yet created"
    # The documented rule: 30 idle minutes, at most 1 hour alive.
    assert c.state_at(last + 29 * MINUTE, idle_minutes=30)[:2] == ("active", True)
    assert c.state_at(last + 61 * MINUTE, idle_minutes=90, max_age_minutes=60)[0] == "expired"


def test_containers_api_creation_reuse_by_id_and_delete(store: EventStore) -> None:
    name = "CodeInterpreterToolWithContainerIdFromContainerApi.jsonl"
    import_file(store, FIXTURES / "openai-dotnet" / "ResponsesToolTests" / name)
    [c] = P.containers(store)
    assert (c.created_via, c.expires_after_minutes, c.exchanges, c.calls) == ("api", 20, 3, 1)
    assert c.created_at_ns == 1758851863 * SECOND
    assert c.deleted_at_ns is not None
    assert c.state_at(c.deleted_at_ns - 1)[:2] == ("active", True)
    assert c.state_at(c.deleted_at_ns)[:2] == ("deleted", False)


def test_downloaded_file_is_recorded_with_its_size(store: EventStore) -> None:
    name = "test_openai_responses_code_execution_download_file_stream.jsonl"
    import_file(store, FIXTURES / "pydantic-ai" / name)
    [c] = P.containers(store)
    [f] = c.files
    assert (f.filename, f.source, f.bytes) == ("numbers_and_squares.csv", "citation+download", 42)
    data = c.to_json(c.last_activity_ns + 5 * MINUTE)
    assert data["state"] == "active" and data["reusable"]

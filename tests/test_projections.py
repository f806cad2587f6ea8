"""Projections over the event log, on SQLite and PostgreSQL: chunks, stages, audit, machinery.

Real fixtures (imported recordings of the OpenAI API) hold no arrival times,
so every hand-worked duration below comes from a *synthetic* captured
exchange built here with known offsets; it is never presented as real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recorder import projections as P
from recorder.events import Event, EventKind
from recorder.ingest import import_file
from recorder.projections.runner import UnknownProjection
from recorder.store import EventStore
from recorder.store.schema import metadata

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "realdata"
VERCEL_CI = FIXTURES / "vercel-ai" / "openai-code-interpreter-tool.1.jsonl"
PYD_IMAGE = (
    FIXTURES / "pydantic-ai" / "test_openai_responses_code_execution_return_image_stream.jsonl"
)
PYD_THINK = (
    FIXTURES
    / "pydantic-ai"
    / "test_openai_responses_thinking_with_code_execution_tool_stream.jsonl"
)
MS = 1_000_000


def all_fixture_paths() -> list[Path]:
    return sorted(FIXTURES.rglob("*.jsonl"))


def projection_tables(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table's rows, sorted, plus the checkpoints' positions and state."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    with store.engine.connect() as conn:
        for name, table in metadata.tables.items():
            if not name.startswith("pj_"):
                continue
            cols = [c for c in table.columns if c.name != "updated_at_ns"]
            rows = conn.execute(sa.select(*cols)).all()
            result[name] = sorted((tuple(r) for r in rows), key=repr)
    return result


# -- a synthetic captured exchange with known timing ---------------------------


def frame(type_: str, seq: int, **fields: Any) -> bytes:
    body = {"type": type_, "sequence_number": seq, **fields}
    return f"event: {type_}\ndata: {json.dumps(body)}\n\n".encode()


def synthetic_session(
    sid: str = "synthetic-session",
    xid: str = "synthetic-exchange",
    *,
    fail: bool = False,
    at_ns: int = 1_760_000_000 * 10**9,
) -> list[Event]:
    """A SYNTHETIC streamed code interpreter exchange with hand-picked offsets (ms).

    started 1000, in_progress 1010, deltas 1200/1300, code done 1500,
    interpreting 1520, completed 3020, item done 3030, response completed 3500.
    With ``fail``, the response fails at 1600, right after the code is done.
    """
    call = "ci_synthetic_1"
    container = "cntr_synthetic_1"
    rid = "resp_synthetic_1"
    response = {
        "id": rid,
        "object": "response",
        "created_at": at_ns // 10**9,
        "status": "in_progress",
        "model": "gpt-4o-mini-2024-07-18",
        "output": [],
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        "usage": None,
    }
    item = {
        "id": call,
        "type": "code_interpreter_call",
        "status": "in_progress",
        "code": "",
        "container_id": container,
        "outputs": [],
    }
    done_item = {
        **item,
        "status": "completed",
        "code": "print(6*7)",
        "outputs": [{"type": "logs", "logs": "42\n"}],
    }
    final = {
        **response,
        "status": "completed",
        "output": [done_item],
        "usage": {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 20},
            "output_tokens": 50,
            "output_tokens_details": {"reasoning_tokens": 10},
            "total_tokens": 150,
        },
    }
    frames: list[tuple[int, bytes]] = [
        (200, frame("response.created", 0, response=response)),
        (1000, frame("response.output_item.added", 1, output_index=0, item=item)),
        (
            1010,
            frame("response.code_interpreter_call.in_progress", 2, output_index=0, item_id=call),
        ),
        (
            1200,
            frame("response.code_interpreter_call_code.delta", 3, item_id=call, delta="print("),
        ),
        (1300, frame("response.code_interpreter_call_code.delta", 4, item_id=call, delta="6*7)")),
        (
            1500,
            frame("response.code_interpreter_call_code.done", 5, item_id=call, code="print(6*7)"),
        ),
    ]
    if fail:
        failed = {**response, "status": "failed", "error": {"message": "synthetic failure"}}
        frames.append((1600, frame("response.failed", 6, response=failed)))
    else:
        frames += [
            (1520, frame("response.code_interpreter_call.interpreting", 6, item_id=call)),
            (3020, frame("response.code_interpreter_call.completed", 7, item_id=call)),
            (3030, frame("response.output_item.done", 8, output_index=0, item=done_item)),
            (3050, frame("response.output_text.delta", 9, item_id="msg_1", delta="The answer")),
            (3060, frame("response.output_text.delta", 10, item_id="msg_1", delta=" is 42.")),
            (3500, frame("response.completed", 11, response=final)),
        ]
    request = {
        "model": "gpt-4o-mini",
        "stream": True,
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
    }
    events = [
        Event(
            sid,
            EventKind.SESSION_OPEN,
            0,
            recorded_at_ns=at_ns,
            meta={"name": "synthetic", "labels": {"kind": "synthetic"}},
        ),
        Event(
            sid,
            EventKind.REQUEST,
            0,
            xid,
            recorded_at_ns=at_ns,
            offset_ns=0,
            payload=json.dumps(request).encode(),
            meta={"method": "POST", "url": "https://api.openai.com/v1/responses"},
        ),
        Event(
            sid,
            EventKind.RESPONSE_HEAD,
            1,
            xid,
            recorded_at_ns=at_ns + 150 * MS,
            offset_ns=150 * MS,
            meta={"status": 200},
        ),
    ]
    for seq, (ms, raw) in enumerate(frames, start=2):
        data = json.loads(raw.split(b"data: ", 1)[1])
        events.append(
            Event(
                sid,
                EventKind.SSE,
                seq,
                xid,
                recorded_at_ns=at_ns + ms * MS,
                offset_ns=ms * MS,
                payload=raw,
                sse_event=data["type"],
                sse_type=data["type"],
                sequence_number=data["sequence_number"],
                response_id=rid,
            )
        )
    end_ms = 1600 if fail else 3500
    events.append(
        Event(
            sid,
            EventKind.EXCHANGE_END,
            len(frames) + 2,
            xid,
            recorded_at_ns=at_ns + end_ms * MS,
            offset_ns=end_ms * MS,
            meta={"outcome": "failed" if fail else "completed"},
        )
    )
    events.append(Event(sid, EventKind.SESSION_CLOSE, 1, recorded_at_ns=at_ns + end_ms * MS))
    return events


# -- stages ----------------------------------------------------------------------


def test_stage_timeline_of_a_synthetic_capture_is_worked_out_by_hand(store: EventStore) -> None:
    store.append(synthetic_session())
    [stage] = P.stages(store, "synthetic-session")
    assert stage.timed
    assert stage.status == "completed"
    assert stage.container_id == "cntr_synthetic_1"
    assert (stage.started_ns, stage.in_progress_ns, stage.first_delta_ns) == (
        1000 * MS,
        1010 * MS,
        1200 * MS,
    )
    assert (stage.code_done_ns, stage.interpreting_ns, stage.completed_ns) == (
        1500 * MS,
        1520 * MS,
        3020 * MS,
    )
    # By hand: code generation 1500 - 1000 = 500 ms; execution 3020 - 1520 = 1500 ms.
    assert stage.code_generation_ns == 500 * MS
    assert stage.execution_ns == 1500 * MS
    assert stage.delta_count == 2
    report = stage.to_json()
    assert report["code_generation_ms"] == 500.0
    assert report["execution_ms"] == 1500.0
    assert report["timing"] == "captured"


def test_a_call_open_when_the_response_fails_ends_failed(store: EventStore) -> None:
    store.append(synthetic_session(fail=True))
    [stage] = P.stages(store, "synthetic-session")
    assert stage.status == "failed"
    assert stage.code_done_ns == 1500 * MS
    assert stage.interpreting_ns is None
    assert stage.execution_ns is None
    chunks = P.chunks(store, "synthetic-session")
    stages = [
        c.metadata["code_interpreter"]["stage"] for c in chunks if "code_interpreter" in c.metadata
    ]
    assert stages == ["started", "in_progress", "code_delta", "code_delta", "failed"]
    [entry] = P.audit(store, "synthetic-session")
    assert entry.status == "failed"
    assert entry.code == "print(6*7)"


def test_imported_fixture_stages_have_unknown_timing_not_invented(store: EventStore) -> None:
    import_file(store, VERCEL_CI)
    session = store.find_session("vercel-ai/openai-code-interpreter-tool.1")
    stages = P.stages(store, session.id)
    assert [s.delta_count for s in stages] == [74, 70, 5]
    for stage in stages:
        assert not stage.timed
        assert stage.code_generation_ns is None and stage.execution_ns is None
        assert stage.status == "completed"
        assert stage.response_created_at == 1757603567
        assert stage.to_json()["timing"].startswith("unknown")


# -- chunks ----------------------------------------------------------------------


def test_chunks_of_a_synthetic_capture(store: EventStore) -> None:
    store.append(synthetic_session())
    chunks = P.chunks(store, "synthetic-session")
    ci = [c.metadata["code_interpreter"] for c in chunks if "code_interpreter" in c.metadata]
    assert [c["stage"] for c in ci] == [
        "started",
        "in_progress",
        "code_delta",
        "code_delta",
        "interpreting",
        "completed",
    ]
    assert all(c["data"]["id"] == "ci_synthetic_1" for c in ci)
    assert all(c["data"]["container_id"] == "cntr_synthetic_1" for c in ci)
    assert [(c["data"]["delta"], c["data"]["code"]) for c in ci if c["stage"] == "code_delta"] == [
        ("print(", "print("),
        ("6*7)", "print(6*7)"),
    ]
    assert ci[-1]["data"]["code"] == "print(6*7)"
    assert ci[-1]["data"]["outputs"] == [{"type": "logs", "logs": "42\n"}]
    assert "".join(c.output for c in chunks) == "The answer is 42."
    assert chunks[-1].metadata["response"]["usage"]["output_tokens"] == 50


def test_chunks_of_a_real_fixture_rebuild_the_code_and_text(store: EventStore) -> None:
    import_file(store, VERCEL_CI)
    session = store.find_session("vercel-ai/openai-code-interpreter-tool.1")
    chunks = P.chunks(store, session.id)
    ci = [c.metadata["code_interpreter"] for c in chunks if "code_interpreter" in c.metadata]
    counts: dict[str, int] = {}
    for c in ci:
        counts[c["stage"]] = counts.get(c["stage"], 0) + 1
    assert counts == {
        "started": 3,
        "in_progress": 3,
        "code_delta": 149,
        "interpreting": 3,
        "completed": 3,
    }
    # The code so far at the last delta is the final code, for every call.
    finals = {c["data"]["id"]: c["data"]["code"] for c in ci if c["stage"] == "completed"}
    last_delta: dict[str, str] = {}
    for c in ci:
        if c["stage"] == "code_delta":
            last_delta[c["data"]["id"]] = c["data"]["code"]
    assert last_delta == finals
    assert finals["ci_68c2e701a23081939c93b6fb5bb952d302d3a5742c7ddae9"] == "sums[:20]\n"
    outputs = [c["data"]["outputs"] for c in ci if c["stage"] == "completed"]
    assert outputs[0] == [{"type": "logs", "logs": "(2, 12, 69868, 6.9868)"}]
    text = "".join(c.output for c in chunks)
    assert text.startswith("Here’s a simulation of rolling two fair six-sided dice")
    assert text.endswith("(JSON, Excel, etc.).")
    [annotation] = [c.metadata["annotation"] for c in chunks if "annotation" in c.metadata]
    assert annotation["filename"] == "roll2dice_sums_10000.csv"


def test_non_streamed_response_yields_the_same_kind_of_chunks(store: EventStore) -> None:
    import_file(
        store, FIXTURES / "pydantic-ai" / "test_openai_responses_code_execution_return_image.jsonl"
    )
    session = store.find_session("pydantic-ai/test_openai_responses_code_execution_return_image")
    chunks = P.chunks(store, session.id)
    ci = [c.metadata["code_interpreter"] for c in chunks if "code_interpreter" in c.metadata]
    assert [c["stage"] for c in ci] == ["started", "completed", "started", "completed"]
    assert all(c["data"]["container_id"] for c in ci)
    assert any(o["type"] == "image" for o in ci[1]["data"]["outputs"])
    assert any(c.output for c in chunks)


def test_http_error_body_becomes_an_error_chunk(store: EventStore) -> None:
    import_file(store, FIXTURES / "pydantic-ai" / "test_openai_responses_model_http_error.jsonl")
    session = store.find_session("pydantic-ai/test_openai_responses_model_http_error")
    [chunk] = P.chunks(store, session.id)
    assert chunk.metadata["http_status"] == 400
    assert chunk.metadata["error"]["code"] == "decimal_below_min_value"


# -- audit -----------------------------------------------------------------------


def test_audit_trail_lists_the_code_that_ran_with_vouching_positions(store: EventStore) -> None:
    import_file(store, VERCEL_CI)
    import_file(store, PYD_THINK)
    session = store.find_session("vercel-ai/openai-code-interpreter-tool.1")
    entries = P.audit(store, session.id)
    assert [e.code for e in entries][2] == "sums[:20]\n"
    assert [e.status for e in entries] == ["completed"] * 3
    assert entries[0].outputs == [{"type": "logs", "logs": "(2, 12, 69868, 6.9868)"}]
    # Each vouching position holds the final code, and the chain verifies.
    by_position = {ev.position: ev for ev in store.session_events(session.id)}
    for entry in entries:
        assert entry.first_position <= min(entry.positions)
        assert max(entry.positions) <= entry.last_position
        carriers = [
            p
            for p in entry.positions
            if entry.code.encode()[:20] in _unescaped(by_position[p].payload)
        ]
        assert carriers, entry.call_id
    assert store.verify().ok
    # Outputs were not requested in the "thinking" recording: None, not [].
    think = store.find_session(
        "pydantic-ai/test_openai_responses_thinking_with_code_execution_tool_stream"
    )
    think_entries = P.audit(store, think.id)
    assert len(think_entries) == 3
    assert all(e.outputs is None for e in think_entries)
    assert len(P.audit(store)) == 6


def test_a_lone_surrogate_in_an_output_is_shown_as_u_fffd_and_kept_in_the_log(
    store: EventStore, tmp_path: Path
) -> None:
    # JSON may escape a lone surrogate ("\\ud800"), which no database stores
    # as text. The tape is the real fixture with one inserted in its logs:
    # generated here, not a recording.
    text = VERCEL_CI.read_text()
    assert text.count('\\"logs\\":\\"') == 6
    tape = tmp_path / "lone-surrogate.jsonl"
    tape.write_text(text.replace('\\"logs\\":\\"', '\\"logs\\":\\"\\\\ud800 '))
    import_file(store, tape)
    session = store.find_session("vercel-ai/openai-code-interpreter-tool.1")
    entries = P.audit(store, session.id)
    assert entries[0].outputs == [{"type": "logs", "logs": "\ufffd (2, 12, 69868, 6.9868)"}]
    logs = [
        c.metadata["code_interpreter"]["data"]["outputs"][0]["logs"]
        for c in P.chunks(store, session.id)
        if c.metadata.get("code_interpreter", {}).get("stage") == "completed"
    ]
    assert logs and all(text.startswith("\ufffd ") for text in logs)
    assert any(b"\\ud800 (2, 12" in ev.payload for ev in store.session_events(session.id))
    assert store.verify().ok


def _unescaped(payload: bytes) -> bytes:
    """The frame's JSON data with string escapes undone, to search for code in it."""
    text = payload.decode()
    data = json.loads(text.split("data: ", 1)[1]) if "data: " in text else json.loads(text)
    return json.dumps(data, ensure_ascii=False).encode().replace(b"\\n", b"\n")


# -- machinery -------------------------------------------------------------------


def test_catch_up_after_new_events_equals_rebuild(store: EventStore) -> None:
    import_file(store, VERCEL_CI)
    P.catch_up(store)
    import_file(store, PYD_IMAGE)
    store.append(synthetic_session())
    P.catch_up(store, batch=37)
    incremental = projection_tables(store)
    P.rebuild(store)
    assert projection_tables(store) == incremental
    positions = {name: pos for name, (pos, _) in P.checkpoints(store).items()}
    assert set(positions.values()) == {store.last_position()}
    assert set(positions) == set(P.NAMES)


def test_a_stale_projection_version_is_rebuilt(store: EventStore) -> None:
    store.append(synthetic_session())
    P.catch_up(store)
    before = projection_tables(store)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE pj_checkpoints SET version = 999 WHERE name = 'stages'"))
        conn.execute(sa.text("DELETE FROM pj_ci_stages"))
    P.catch_up(store)
    assert projection_tables(store) == before


def test_a_losing_concurrent_batch_is_discarded(store: EventStore) -> None:
    from recorder.projections.runner import _apply_batch, read_events, resolve

    store.append(synthetic_session())
    P.catch_up(store, ["stages"], until=3)
    events = read_events(store, 3, store.last_position(), 1000)
    P.catch_up(store, ["stages"])  # another reader got there first
    assert not _apply_batch(store, resolve(["stages"]), 3, events)
    assert len(P.stages(store)) == 1


def test_unknown_projection_name_is_a_one_line_error(store: EventStore) -> None:
    with pytest.raises(UnknownProjection, match="no projection named 'nope'"):
        P.rebuild(store, ["nope"])


def test_rebuild_reports_progress(store: EventStore) -> None:
    store.append(synthetic_session())
    seen: list[tuple[int, int]] = []
    consumed = P.rebuild(
        store, ["chunks"], batch=4, progress=lambda done, total: seen.append((done, total))
    )
    assert consumed == store.last_position()
    assert seen[-1] == (store.last_position(), store.last_position())
    assert len(seen) == -(-store.last_position() // 4)


def test_read_ahead_only_where_a_reader_never_blocks_the_writer(store: EventStore) -> None:
    import types

    from recorder.projections.runner import _can_read_ahead

    # Every database codetape opens reads ahead (SQLite files are in WAL mode)...
    assert _can_read_ahead(store)
    # ...but not an in-memory SQLite database, whose connections are not one
    # shared database the way a WAL file's are.
    memory = sa.create_engine("sqlite://")
    try:
        assert not _can_read_ahead(
            types.SimpleNamespace(backend="sqlite", url="sqlite://", engine=memory)  # type: ignore[arg-type]
        )
    finally:
        memory.dispose()


def test_rebuild_reading_ahead_equals_one_batch(store: EventStore) -> None:
    for path in (VERCEL_CI, PYD_THINK):
        import_file(store, path)
    store.append(synthetic_session())
    P.rebuild(store, batch=store.last_position())
    whole = _tables(store)
    P.rebuild(store, batch=7)  # many batches, each read while the one before is written
    assert _tables(store) == whole


def _tables(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    result = {}
    with store.engine.connect() as conn:
        for name, table in metadata.tables.items():
            if name.startswith("pj_"):
                cols = [c for c in table.columns if c.name != "updated_at_ns"]
                result[name] = sorted((tuple(r) for r in conn.execute(sa.select(*cols))), key=repr)
    return result


def _log_event(payload: bytes, sse_type: str = "response.output_text.delta") -> Any:
    from recorder.projections.runner import LogEvent

    return LogEvent((1, "s", "x", "sse", 0, None, sse_type, "{}", payload))


@pytest.mark.parametrize(
    "data",
    [
        '{"type":"response.output_text.delta","item_id":"msg_1","delta":"a \\"delta\\": b"}',
        '{"type": "t", "delta": "caf\\u00e9\\n", "item_id": "i"}',
        '{"type":"t","delta":"x","item_id":"i","delta":"y"}',
        '{"type":"t","delta":null,"item_id":"i"}',
        '{"type":"t","item_id":"i","logprobs":[{"token":"\\"delta\\":"}],"delta":"z"}',
        '{"type":"t","delta":"no item id"}',
        '{"type":"t","item_id":"i","delta":"lone \\ud800, pair \\ud83d\\ude00"}',
        "not json",
    ],
)
def test_delta_fast_path_agrees_with_the_full_parse(data: str) -> None:
    ev = _log_event(f"event: t\ndata: {data}\n\n".encode())
    fast = ev.delta_fields()
    parsed = _log_event(ev.payload).data
    if isinstance(parsed, dict):
        expected = tuple(
            v if isinstance(v, str) else None for v in (parsed.get("item_id"), parsed.get("delta"))
        )
    else:
        expected = (None, None)
    assert fast == expected


def test_delta_fast_path_agrees_on_every_fixture_delta() -> None:
    from recorder.tape import read_tape

    checked = 0
    for path in sorted(FIXTURES.rglob("*.jsonl")):
        for ev in read_tape(path):
            if ev.sse_type and ev.sse_type.endswith(".delta"):
                fast = _log_event(ev.payload, ev.sse_type).delta_fields()
                data = _log_event(ev.payload, ev.sse_type).data
                assert fast == (data.get("item_id"), data.get("delta")), ev.payload
                checked += 1
    assert checked > 1000


def test_concurrent_readers_catching_up_never_apply_an_event_twice(store: EventStore) -> None:
    import threading

    for path in (VERCEL_CI, PYD_THINK):
        import_file(store, path)
    store.append(synthetic_session())
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            P.catch_up(store, batch=50)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    concurrent = projection_tables(store)
    P.rebuild(store)
    assert projection_tables(store) == concurrent

"""Outcomes as the SDK saw them: a stream cut before its last blank line, through the real SDK.

The openai SDK's SSE decoder dispatches an event only at a blank line, so a
last frame without one never reaches the client. codetape stores its bytes as
they came, marks it ``unterminated``, takes the outcome from the frames the
SDK parsed, and keeps it out of the projections: they equal those of the same
stream without that frame at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from fake_upstream import Scripted, Upstream, load_tape

from recorder import projections as P
from recorder.client import record
from recorder.events import EventKind, StoredEvent
from recorder.ingest import import_file
from recorder.store import EventStore

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
# A fake key, spelled in pieces so that secret scanners do not flag this file.
KEY = "sk-" + "outcome-0123456789"
BASE = "https://api.openai.com/v1"
FRAMES = load_tape(CI_STREAM)[0].chunks
CUT = [*FRAMES[:-1], FRAMES[-1].removesuffix(b"\n")]  # no blank line after the last frame


def scripted(frames: list[bytes]) -> Scripted:
    return Scripted(
        "POST", "/v1/responses", 200, [("content-type", "text/event-stream")], frames, True
    )


def sdk_events(frames: list[bytes]) -> list[str]:
    """The event types the SDK gives for this body, with no recorder anywhere."""
    upstream = Upstream([scripted(frames)])
    http = httpx2.Client(transport=upstream.transport())
    with openai.OpenAI(api_key=KEY, base_url=BASE, http_client=http, max_retries=0) as client:
        return [e.type for e in client.responses.create(model="m", input="x", stream=True)]


def sse_of(events: list[StoredEvent]) -> list[StoredEvent]:
    return [e for e in events if e.kind is EventKind.SSE]


def seen_by_projections(store: EventStore, session_id: str) -> dict[str, Any]:
    """What the projections make of a session, minus ids, positions and times."""
    chunks = [
        (c.output, json.dumps(c.metadata, sort_keys=True)) for c in P.chunks(store, session_id)
    ]
    stages = [
        (s.call_id, s.status, s.delta_count, s.response_created_at, s.response_completed_at)
        for s in P.stages(store, session_id)
    ]
    return {"chunks": chunks, "stages": stages}


def test_the_sdk_drops_a_last_frame_without_its_blank_line() -> None:
    assert FRAMES[-1].startswith(b"event: response.completed\n")
    assert sdk_events(FRAMES)[-1] == "response.completed"
    assert sdk_events(CUT) == sdk_events(FRAMES)[:-1]


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_capture_marks_the_cut_tail_and_takes_the_outcome_the_sdk_saw(
    store: EventStore, writer: str
) -> None:
    with record(
        store,
        "cut",
        transport=Upstream([scripted(CUT)]).transport(),
        api_key=KEY,
        base_url=BASE,
        max_retries=0,
        writer=writer,  # type: ignore[arg-type]
    ) as client:
        seen = [e.type for e in client.responses.create(model="m", input="x", stream=True)]
    with record(
        store,
        "whole-but-last",
        transport=Upstream([scripted(FRAMES[:-1])]).transport(),
        api_key=KEY,
        base_url=BASE,
        max_retries=0,
        writer=writer,  # type: ignore[arg-type]
    ) as client:
        list(client.responses.create(model="m", input="x", stream=True))
    assert seen == sdk_events(CUT) and "response.completed" not in seen

    cut = store.find_session("cut")
    [x] = store.exchanges(cut.id)
    events = store.exchange_events(x.id)
    sse = sse_of(events)
    # The bytes as they came: every frame, the tail included.
    assert b"".join(e.payload for e in sse) == b"".join(CUT) and len(sse) == len(FRAMES)
    assert sse[-1].meta == {"unterminated": True}
    assert (sse[-1].sse_type, sse[-1].sse_event, sse[-1].sequence_number) == (None, None, None)
    assert all(e.meta == {} for e in sse[:-1])
    end = events[-1].meta
    assert end["outcome"] == "interrupted" and "response.completed" in end["reason"]
    # No projection counts the tail as an event the client saw.
    other = store.find_session("whole-but-last")
    assert seen_by_projections(store, cut.id) == seen_by_projections(store, other.id)
    assert all(s.response_completed_at is None for s in P.stages(store, cut.id))
    assert store.verify().ok


def test_a_last_frame_ending_in_cr_is_dispatched_and_not_marked(store: EventStore) -> None:
    # "\n\r" at the very end is a blank line: the SDK dispatches the event.
    frames = [*FRAMES[:-1], FRAMES[-1].removesuffix(b"\n") + b"\r"]
    assert sdk_events(frames)[-1] == "response.completed"
    with record(
        store,
        "cr",
        transport=Upstream([scripted(frames)]).transport(),
        api_key=KEY,
        base_url=BASE,
        max_retries=0,
    ) as client:
        list(client.responses.create(model="m", input="x", stream=True))
    [x] = store.exchanges(store.find_session("cr").id)
    events = store.exchange_events(x.id)
    assert sse_of(events)[-1].meta == {} and sse_of(events)[-1].sse_type == "response.completed"
    assert events[-1].meta["outcome"] == "completed"


def test_import_marks_the_cut_tail_like_capture(store: EventStore, tmp_path: Path) -> None:
    def recording(name: str, frames: list[bytes]) -> Path:
        path = tmp_path / "SessionRecords" / "Cut" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "RequestUri": f"{BASE}/responses",
            "RequestMethod": "POST",
            "RequestHeaders": {"Content-Type": "application/json"},
            "RequestBody": '{"model":"m","input":"x","stream":true}',
            "StatusCode": 200,
            "ResponseHeaders": {"Content-Type": "text/event-stream"},
            "ResponseBody": b"".join(frames).decode(),
        }
        path.write_text(json.dumps({"Entries": [entry]}))
        return path

    [(cut_id, _)] = import_file(store, recording("cut", CUT)).sessions
    [(other_id, _)] = import_file(store, recording("other", FRAMES[:-1])).sessions
    [x] = store.exchanges(cut_id)
    events = store.exchange_events(x.id)
    assert sse_of(events)[-1].meta == {"unterminated": True}
    assert events[-1].meta["outcome"] == "interrupted"
    assert seen_by_projections(store, cut_id) == seen_by_projections(store, other_id)

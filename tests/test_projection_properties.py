"""Property: catching up in any number of batches, split anywhere, equals one rebuild.

Checked over generated event sequences (SYNTHETIC exchanges in every shape the
projections handle — streamed code interpreter calls that complete, fail or
are cut off, non-streamed responses reusing containers, the Containers API,
file downloads, HTTP errors — interleaved as concurrent exchanges are in a real
log) and over all real fixtures, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import projections as P
from recorder.events import Event, EventKind
from recorder.ingest import import_file
from recorder.projections.runner import _prepare, resolve
from recorder.store import EventStore
from recorder.store.schema import metadata

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "realdata"
SECOND = 10**9
MS = 10**6
API = "https://api.openai.com/v1"


def projection_tables(store: EventStore) -> dict[str, list[tuple[Any, ...]]]:
    result: dict[str, list[tuple[Any, ...]]] = {}
    with store.engine.connect() as conn:
        for name, table in metadata.tables.items():
            if name.startswith("pj_"):
                cols = [c for c in table.columns if c.name != "updated_at_ns"]
                result[name] = sorted((tuple(r) for r in conn.execute(sa.select(*cols))), key=repr)
    return result


def split_catch_up_equals_rebuild(store: EventStore, splits: list[int], batch: int) -> None:
    _prepare(store, resolve(None), force=True)
    for until in sorted(splits):
        P.catch_up(store, until=until, batch=batch)
    P.catch_up(store, batch=batch)
    incremental = projection_tables(store)
    P.rebuild(store)
    assert projection_tables(store) == incremental


# -- SYNTHETIC exchanges -----------------------------------------------------------


def _frame(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, **fields}


def _request(sid: str, xid: str, at: int, method: str, url: str, body: Any) -> Event:
    payload = b"" if body is None else json.dumps(body).encode()
    return Event(
        sid, EventKind.REQUEST, 0, xid, at, 0, payload, meta={"method": method, "url": url}
    )


def _body_exchange(
    sid: str, xid: str, at: int, method: str, url: str, req: Any, status: int, body: Any
) -> list[Event]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return [
        _request(sid, xid, at, method, url, req),
        Event(sid, EventKind.RESPONSE_HEAD, 1, xid, at + MS, MS, meta={"status": status}),
        Event(sid, EventKind.BODY, 2, xid, at + 2 * MS, 2 * MS, raw),
        Event(
            sid,
            EventKind.EXCHANGE_END,
            3,
            xid,
            at + 3 * MS,
            3 * MS,
            meta={"outcome": "completed" if status < 400 else "http_error"},
        ),
    ]


def _ci_stream(
    sid: str, xid: str, at: int, rng: random.Random, container: str, auto: bool
) -> list[Event]:
    calls = rng.randint(0, 2)
    ending = rng.choice(["completed", "completed", "failed", "cut"])
    tool = {"type": "code_interpreter", "container": {"type": "auto"} if auto else container}
    response = {
        "id": f"resp_{xid}",
        "object": "response",
        "created_at": at // SECOND,
        "status": "in_progress",
        "model": rng.choice(["gpt-4o-mini-2024-07-18", "gpt-5-nano", "no-such-model"]),
        "tools": [tool],
        "output": [],
        "usage": None,
    }
    frames = [_frame("response.created", response=response)]
    done_items = []
    for n in range(calls):
        cid = f"ci_{xid}_{n}"
        item = {
            "id": cid,
            "type": "code_interpreter_call",
            "status": "in_progress",
            "code": "",
            "container_id": container,
            "outputs": [],
        }
        pieces = [f"x{n} = {k}\n" for k in range(rng.randint(0, 4))]
        code = "".join(pieces)
        done = {**item, "status": "completed", "code": code, "outputs": rng.choice([None, []])}
        frames.append(_frame("response.output_item.added", output_index=n, item=item))
        frames.append(_frame("response.code_interpreter_call.in_progress", item_id=cid))
        frames += [
            _frame("response.code_interpreter_call_code.delta", item_id=cid, delta=p)
            for p in pieces
        ]
        frames.append(_frame("response.code_interpreter_call_code.done", item_id=cid, code=code))
        frames.append(_frame("response.code_interpreter_call.interpreting", item_id=cid))
        frames.append(_frame("response.code_interpreter_call.completed", item_id=cid))
        frames.append(_frame("response.output_item.done", output_index=n, item=done))
        done_items.append(done)
        if rng.random() < 0.5:
            frames.append(
                _frame(
                    "response.output_text.annotation.added",
                    annotation={
                        "type": "container_file_citation",
                        "container_id": container,
                        "file_id": f"cfile_{xid}_{n}",
                        "filename": f"out{n}.csv",
                    },
                )
            )
    frames += [_frame("response.output_text.delta", delta=w) for w in ("Done", ".")]
    outcome = "completed"
    if ending == "completed":
        final = {
            **response,
            "status": "completed",
            "output": done_items,
            "completed_at": at // SECOND + 3,
            "usage": {
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 10},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 5},
            },
        }
        frames.append(_frame("response.completed", response=final))
    elif ending == "failed":
        frames = frames[: rng.randint(1, len(frames))]
        frames.append(_frame("error", message="synthetic"))
        frames.append(_frame("response.failed", response={**response, "status": "failed"}))
        outcome = "failed"
    else:
        frames = frames[: rng.randint(1, len(frames))]
        outcome = "interrupted"
    events = [
        _request(sid, xid, at, "POST", f"{API}/responses", {"model": "m", "tools": [tool]}),
        Event(sid, EventKind.RESPONSE_HEAD, 1, xid, at + MS, MS, meta={"status": 200}),
    ]
    for seq, data in enumerate(frames, start=2):
        data["sequence_number"] = seq - 2
        raw = f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()
        offset = seq * 7 * MS
        events.append(
            Event(
                sid,
                EventKind.SSE,
                seq,
                xid,
                at + offset,
                offset,
                raw,
                sse_event=data["type"],
                sse_type=data["type"],
                sequence_number=seq - 2,
                response_id=f"resp_{xid}",
            )
        )
    end = len(frames) + 2
    events.append(
        Event(sid, EventKind.EXCHANGE_END, end, xid, at + end * 7 * MS, meta={"outcome": outcome})
    )
    return events


def generated_log(kinds: list[str], seed: int) -> list[Event]:
    """A SYNTHETIC session of exchanges of the given kinds, interleaved by ``seed``."""
    rng = random.Random(seed)
    sid = "gen-" + uuid.uuid4().hex[:12]
    at = (1_757_000_000 + rng.randint(0, 30_000_000)) * SECOND
    containers: list[str] = []
    exchanges: list[list[Event]] = []
    for n, kind in enumerate(kinds):
        xid = f"{sid}-x{n}"
        t = at + n * rng.randint(1, 900) * SECOND
        known = rng.choice(containers) if containers else None
        if kind == "ci" or (kind in ("reuse", "download", "delete") and known is None):
            auto = known is None or rng.random() < 0.6
            container = f"cntr_{xid}" if auto else str(known)
            containers.append(container)
            exchanges.append(_ci_stream(sid, xid, t, rng, container, auto))
        elif kind == "reuse":
            item = {
                "id": f"ci_{xid}",
                "type": "code_interpreter_call",
                "status": "completed",
                "code": "1",
                "container_id": known,
                "outputs": None,
            }
            body = {
                "id": f"resp_{xid}",
                "object": "response",
                "created_at": t // SECOND,
                "status": "completed",
                "model": "gpt-4o-mini",
                "output": [item],
                "usage": {"input_tokens": 5, "output_tokens": 1},
            }
            req = {
                "model": "gpt-4o-mini",
                "tools": [{"type": "code_interpreter", "container": known}],
            }
            exchanges.append(
                _body_exchange(sid, xid, t, "POST", f"{API}/responses", req, 200, body)
            )
        elif kind == "create":
            cid = f"cntr_api_{xid}"
            containers.append(cid)
            body = {
                "id": cid,
                "object": "container",
                "created_at": t // SECOND,
                "expires_after": {"anchor": "last_active_at", "minutes": 20},
            }
            req = {"name": "c", "memory_limit": rng.choice(["1g", "4g"])}
            exchanges.append(
                _body_exchange(sid, xid, t, "POST", f"{API}/containers", req, 200, body)
            )
        elif kind == "download":
            url = f"{API}/containers/{known}/files/cfile_{xid}/content"
            exchanges.append(_body_exchange(sid, xid, t, "GET", url, None, 200, b"a,b\n1,2\n"))
        elif kind == "delete":
            body = {"id": known, "object": "container.deleted", "deleted": True}
            url = f"{API}/containers/{known}"
            exchanges.append(_body_exchange(sid, xid, t, "DELETE", url, None, 200, body))
        else:  # http error
            err = {"error": {"message": "bad", "code": "bad"}}
            exchanges.append(_body_exchange(sid, xid, t, "POST", f"{API}/responses", {}, 400, err))
    # Interleave the exchanges as concurrent streams are in a real log.
    merged: list[Event] = []
    cursors = [0] * len(exchanges)
    live = [i for i, x in enumerate(exchanges) if x]
    while live:
        i = rng.choice(live)
        merged.append(exchanges[i][cursors[i]])
        cursors[i] += 1
        if cursors[i] == len(exchanges[i]):
            live.remove(i)
    opened = Event(sid, EventKind.SESSION_OPEN, 0, recorded_at_ns=at, meta={"name": sid})
    closed = Event(sid, EventKind.SESSION_CLOSE, 1, recorded_at_ns=at)
    return [opened, *merged, closed]


KINDS = st.lists(
    st.sampled_from(["ci", "ci", "reuse", "create", "download", "delete", "error"]),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kinds=KINDS,
    seed=st.integers(0, 2**32),
    fractions=st.lists(st.floats(0, 1), max_size=4),
    batch=st.integers(1, 60),
)
def test_generated_logs_catch_up_equals_rebuild(
    store: EventStore, kinds: list[str], seed: int, fractions: list[float], batch: int
) -> None:
    store.append(generated_log(kinds, seed))
    head = store.last_position()
    split_catch_up_equals_rebuild(store, [int(f * head) for f in fractions], batch)


def test_all_fixtures_catch_up_equals_rebuild_at_every_split_shape(store: EventStore) -> None:
    for path in sorted(FIXTURES.rglob("*.jsonl")):
        import_file(store, path)
    head = store.last_position()
    rng = random.Random(6)
    for batch in (37, 700, 5000):
        splits = sorted(rng.sample(range(1, head), 5))
        split_catch_up_equals_rebuild(store, splits, batch)
    assert len(P.audit(store)) > 10


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fractions=st.lists(st.floats(0, 1), min_size=1, max_size=5), batch=st.integers(50, 3000))
def test_all_fixtures_property(store: EventStore, fractions: list[float], batch: int) -> None:
    if store.last_position() == 0:
        for path in sorted(FIXTURES.rglob("*.jsonl")):
            import_file(store, path)
    head = store.last_position()
    split_catch_up_equals_rebuild(store, [int(f * head) for f in fractions], batch)

"""A SYNTHETIC code interpreter session of about 5,000 events, for the report's size tests.

Shaped like the fixtures' streams (the same event types and fields), but
generated: ``calls`` code interpreter calls of ``deltas`` code deltas each, an
image output every ``image_every`` calls (a small PNG made here), then a
message of ``text_deltas`` text deltas and the final response, then the
download of a PNG file from the container. Arrival offsets
are chosen, so the stages have known durations: call k starts at k × 2 s,
generates code for 1.2 s, waits 0.2 s, runs for 0.5 s.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

from recorder.events import Event, EventKind

SECOND = 10**9
MS = 10**6
SYNTHETIC_NAME = "synthetic: 5,000-event code interpreter session"


def png(width: int = 64, height: int = 48) -> bytes:
    """A small valid RGB PNG: a diagonal gradient."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (x * 4 % 256, y * 5 % 256, 160))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _frame(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def synthetic_session(
    sid: str,
    at_ns: int,
    *,
    calls: int = 48,
    deltas: int = 95,
    text_deltas: int = 139,
    image_every: int = 12,
) -> list[Event]:
    """The session's events (5,000 with the defaults), ready for ``EventStore.append``."""
    xid = f"{sid}-x1"
    rid = f"resp_{sid}"
    container = f"cntr_{sid}"
    image = "data:image/png;base64," + base64.b64encode(png()).decode()
    frames: list[tuple[int, str, dict[str, Any]]] = []
    seqn = 0

    def emit(offset_ns: int, kind: str, data: dict[str, Any]) -> None:
        nonlocal seqn
        frames.append((offset_ns, kind, {"type": kind, "sequence_number": seqn, **data}))
        seqn += 1

    response: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": at_ns // SECOND,
        "status": "in_progress",
        "model": "gpt-5-2025-08-07",
        "output": [],
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        "usage": None,
    }
    emit(50 * MS, "response.created", {"response": dict(response)})
    items: list[dict[str, Any]] = []
    for k in range(calls):
        start = SECOND + k * 2 * SECOND
        call_id = f"ci_{sid}_{k:03d}"
        lines = [f"values_{k} = [i * {k} for i in range({deltas})]"]
        lines += [f"total_{k}_{i} = sum(values_{k}[:{i}])" for i in range(deltas - 2)]
        lines.append(f"print('call {k}:', total_{k}_{deltas - 3})")
        code = "\n".join(lines)
        pieces = [line + "\n" for line in lines]
        pieces[-1] = pieces[-1].rstrip("\n")
        added = {
            "id": call_id,
            "type": "code_interpreter_call",
            "status": "in_progress",
            "code": "",
            "container_id": container,
            "outputs": None,
        }
        emit(start, "response.output_item.added", {"output_index": k, "item": added})
        emit(
            start + 10 * MS,
            "response.code_interpreter_call.in_progress",
            {"output_index": k, "item_id": call_id},
        )
        for i, piece in enumerate(pieces):  # one delta per line: `deltas` deltas
            emit(
                start + 20 * MS + i * (1180 * MS // deltas),
                "response.code_interpreter_call_code.delta",
                {"output_index": k, "item_id": call_id, "delta": piece},
            )
        emit(
            start + 1200 * MS,
            "response.code_interpreter_call_code.done",
            {"output_index": k, "item_id": call_id, "code": code},
        )
        emit(
            start + 1400 * MS,
            "response.code_interpreter_call.interpreting",
            {"output_index": k, "item_id": call_id},
        )
        emit(
            start + 1900 * MS,
            "response.code_interpreter_call.completed",
            {"output_index": k, "item_id": call_id},
        )
        outputs: list[dict[str, Any]] = [{"type": "logs", "logs": f"call {k}: {k * 4371}\n"}]
        if k % image_every == 0:
            outputs.append({"type": "image", "url": image})
        done = {**added, "status": "completed", "code": code, "outputs": outputs}
        emit(start + 1910 * MS, "response.output_item.done", {"output_index": k, "item": done})
        items.append(done)
    t = SECOND + calls * 2 * SECOND
    msg_id = f"msg_{sid}"
    message = {"id": msg_id, "type": "message", "status": "in_progress", "role": "assistant"}
    opened = {**message, "content": []}
    emit(t, "response.output_item.added", {"output_index": calls, "item": opened})
    words = [f"result{n} " for n in range(text_deltas)]
    for n, word in enumerate(words):
        emit(
            t + (n + 1) * 5 * MS,
            "response.output_text.delta",
            {"output_index": calls, "item_id": msg_id, "content_index": 0, "delta": word},
        )
    text = "".join(words)
    final_message = {
        **message,
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    t += (text_deltas + 2) * 5 * MS
    emit(t, "response.output_item.done", {"output_index": calls, "item": final_message})
    completed = {
        **response,
        "status": "completed",
        "completed_at": (at_ns + t) // SECOND,
        "output": [*items, final_message],
        "usage": {
            "input_tokens": 12000,
            "input_tokens_details": {"cached_tokens": 4000},
            "output_tokens": 9000,
            "output_tokens_details": {"reasoning_tokens": 3000},
            "total_tokens": 21000,
        },
    }
    emit(t + 10 * MS, "response.completed", {"response": completed})

    request = {
        "model": "gpt-5",
        "stream": True,
        "include": ["code_interpreter_call.outputs"],
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        "input": "SYNTHETIC: run many small computations",
    }
    events = [
        Event(
            sid,
            EventKind.SESSION_OPEN,
            0,
            recorded_at_ns=at_ns,
            meta={"name": SYNTHETIC_NAME, "labels": {"synthetic": "true"}},
        ),
        Event(
            sid,
            EventKind.REQUEST,
            0,
            xid,
            at_ns,
            payload=json.dumps(request).encode(),
            meta={"method": "POST", "url": "https://api.openai.com/v1/responses"},
        ),
        Event(
            sid,
            EventKind.RESPONSE_HEAD,
            1,
            xid,
            at_ns + 40 * MS,
            offset_ns=40 * MS,
            meta={
                "status": 200,
                "headers": [["content-type", "text/event-stream"]],
                "streamed": True,
            },
        ),
    ]
    for n, (offset, kind, data) in enumerate(frames):
        events.append(
            Event(
                sid,
                EventKind.SSE,
                n + 2,
                xid,
                at_ns + offset,
                offset_ns=offset,
                payload=_frame(kind, data),
                sse_event=kind,
                sse_type=kind,
                sequence_number=data["sequence_number"],
                response_id=rid,
            )
        )
    end = at_ns + t + 20 * MS
    events.append(
        Event(sid, EventKind.EXCHANGE_END, len(frames) + 2, xid, end, meta={"outcome": "completed"})
    )
    # Then the client downloads a chart the code wrote into the container: a PNG file.
    dl = f"{sid}-x2"
    url = f"https://api.openai.com/v1/containers/{container}/files/cfile_{sid}_chart/content"
    events += [
        Event(sid, EventKind.REQUEST, 0, dl, end + SECOND, meta={"method": "GET", "url": url}),
        Event(
            sid,
            EventKind.RESPONSE_HEAD,
            1,
            dl,
            end + SECOND + 30 * MS,
            offset_ns=30 * MS,
            meta={"status": 200, "headers": [["content-type", "image/png"]], "streamed": False},
        ),
        Event(sid, EventKind.BODY, 2, dl, end + SECOND + 35 * MS, offset_ns=35 * MS, payload=png()),
        Event(
            sid,
            EventKind.EXCHANGE_END,
            3,
            dl,
            end + SECOND + 36 * MS,
            meta={"outcome": "completed"},
        ),
    ]
    events.append(Event(sid, EventKind.SESSION_CLOSE, 1, recorded_at_ns=end + 2 * SECOND))
    return events

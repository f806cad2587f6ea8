"""The shapes of an exchange's events, built in one place for capture, the proxy and imports.

Guarantees: every exchange event codetape writes has the shape built here, so
replay and projections cannot tell a captured exchange from an imported one
except by its times and fidelity. Headers, URLs and request bodies pass through
the :class:`~recorder.redact.Redactor` before an event exists, and so do the
response objects that echo the request (lifecycle SSE frames, JSON bodies).
Payloads are the bytes given, never re-encoded, except the values a redactor
replaced, which the event's meta names (``redacted_paths``). A session's
name, labels and metadata (endpoint URLs, settings) pass through
:func:`session_open_meta`, whoever opens it: capture, the proxy, a rerun, an
import. A last SSE frame
that a client would drop (no blank line after it) is stored as it came and
marked ``unterminated``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from recorder.errors import TapeError
from recorder.events import Event, EventKind, Outcome, assemble_event
from recorder.redact import ECHO_TYPES, Redactor
from recorder.sse import SSEFrame

__all__ = [
    "body_event",
    "body_response_id",
    "end_event",
    "redact_event",
    "redact_frame",
    "request_event",
    "response_head_event",
    "session_open_meta",
    "sse_event",
    "sse_frame_event",
    "unterminated_sse_event",
]


def session_open_meta(meta: Mapping[str, Any], redactor: Redactor) -> dict[str, Any]:
    """A ``session_open`` meta with its name, label values and metadata redacted.

    They are what a user typed or configured (``--upstream``,
    ``$OPENAI_BASE_URL``, a label): an endpoint URL loses its user info and
    secret query values as request URLs do, a credential-looking value is
    replaced (see :meth:`~recorder.redact.Redactor.setting`). Everything else
    in ``meta`` (the recorder's identity, an import's source) is kept as it is.
    """
    out = dict(meta)
    for key in ("name", "labels", "metadata"):
        if key in out:
            out[key] = redactor.settings(out[key])
    return out


def request_event(
    session_id: str,
    exchange_id: str,
    *,
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    fidelity: str,
    redactor: Redactor,
    at_ns: int,
    offset_ns: int | None = None,
) -> Event:
    """The exchange's REQUEST (seq 0), redacted.

    The meta says what was redacted, so replay can leave exactly that out of
    matching without being told: a header or query value that was replaced
    reads :data:`~recorder.redact.REDACTED` where it stood, ``redacted_paths``
    lists the JSON paths replaced in the body (a JSON value could be that
    string for real) and ``redacted_userinfo`` says the URL lost its user info.
    """
    payload, redacted_paths = redactor.body(body)
    stored_url, _, userinfo = redactor.url_redacted(url)
    meta: dict[str, Any] = {
        "method": method.upper(),
        "url": stored_url,
        "headers": redactor.header_pairs(headers),
        "fidelity": fidelity,
    }
    if redacted_paths:
        meta["redacted_paths"] = redacted_paths
    if userinfo:
        meta["redacted_userinfo"] = True
    return Event(
        session_id,
        EventKind.REQUEST,
        0,
        exchange_id,
        recorded_at_ns=at_ns,
        offset_ns=offset_ns,
        payload=payload,
        meta=meta,
    )


def response_head_event(
    session_id: str,
    exchange_id: str,
    *,
    status: int,
    headers: Iterable[tuple[str, str]],
    fidelity: str,
    streamed: bool,
    redactor: Redactor,
    at_ns: int,
    offset_ns: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Event:
    """The exchange's RESPONSE_HEAD (seq 1); ``extra`` adds capture-only meta (http_version)."""
    meta: dict[str, Any] = {
        "status": status,
        "headers": redactor.header_pairs(headers),
        "fidelity": fidelity,
        "streamed": streamed,
    }
    if extra:
        meta.update(extra)
    return Event(
        session_id,
        EventKind.RESPONSE_HEAD,
        1,
        exchange_id,
        recorded_at_ns=at_ns,
        offset_ns=offset_ns,
        meta=meta,
    )


def sse_event(
    session_id: str,
    exchange_id: str,
    seq: int,
    frame: SSEFrame,
    response_id: str | None,
    *,
    at_ns: int,
    offset_ns: int | None = None,
    redactor: Redactor | None = None,
) -> Event:
    """One SSE frame: its payload exactly ``frame.raw``, unless ``redactor`` replaced an echo.

    A frame cut off before its blank line becomes :func:`unterminated_sse_event`.
    """
    if frame.cut:
        return unterminated_sse_event(
            session_id,
            exchange_id,
            seq,
            frame,
            response_id,
            redactor,
            at_ns=at_ns,
            offset_ns=offset_ns,
        )
    sse_type, sequence_number, _ = frame.fields()
    raw, meta = frame.raw, None
    if redactor is not None and (sse_type in ECHO_TYPES or type(frame.json()) is not dict):
        raw, meta = redact_frame(redactor, raw)
    return sse_frame_event(
        session_id,
        exchange_id,
        seq,
        raw,
        frame.event,
        sse_type,
        sequence_number,
        response_id,
        at_ns,
        offset_ns,
        meta,
    )


def redact_frame(redactor: Redactor, raw: bytes) -> tuple[bytes, dict[str, Any] | None]:
    """``raw`` with the request paths its response object echoes replaced, and the
    event meta that says so (``None`` when nothing was replaced: the wire's bytes)."""
    redacted = redactor.frame(raw)
    if redacted is None:
        return raw, None
    return redacted[0], {"redacted_paths": redacted[1]}


def unterminated_sse_event(
    session_id: str,
    exchange_id: str,
    seq: int,
    frame: SSEFrame,
    response_id: str | None,
    redactor: Redactor | None,
    *,
    at_ns: int,
    offset_ns: int | None = None,
) -> Event:
    """A last frame without its blank line (the stream stopped mid-event).

    Its bytes are stored as they came (echoes redacted), with meta
    ``unterminated: true``; a client drops such a frame (the openai SDK
    dispatches an event only at a blank line), so it carries no parsed
    ``sse_event``, ``sse_type`` or ``sequence_number`` and no projection counts
    it as an event the client saw.
    """
    raw, meta = frame.raw, None
    if redactor is not None:
        raw, meta = redact_frame(redactor, raw)
    return Event(
        session_id,
        EventKind.SSE,
        seq,
        exchange_id,
        recorded_at_ns=at_ns,
        offset_ns=offset_ns,
        payload=raw,
        meta={**(meta or {}), "unterminated": True},
        response_id=response_id,
    )


def sse_frame_event(
    session_id: str,
    exchange_id: str,
    seq: int,
    raw: bytes,
    sse_event: str | None,
    sse_type: str | None,
    sequence_number: int | None,
    response_id: str | None,
    at_ns: int,
    offset_ns: int | None,
    meta: dict[str, Any] | None = None,
) -> Event:
    """``Event(session_id, EventKind.SSE, seq, exchange_id, ...)``, built cheaply.

    ``meta`` is empty unless the frame was redacted (see :func:`redact_frame`).

    Capture builds one per frame on the client's thread: the frozen
    dataclass's ``__init__`` (a checked ``object.__setattr__`` per field) costs
    several times these slot setters, for the same value.
    """
    return assemble_event(
        session_id, EventKind.SSE, seq, exchange_id, at_ns, offset_ns, raw,
        {} if meta is None else meta, sse_event, sse_type, sequence_number, response_id,
    )  # fmt: skip


def body_response_id(body: bytes) -> str | None:
    """The id of a non-streamed Responses API object, when ``body`` is one."""
    if body[:1] != b"{":
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(parsed, dict) and parsed.get("object") == "response":
        value = parsed.get("id")
        return value if isinstance(value, str) else None
    return None


def body_event(
    session_id: str,
    exchange_id: str,
    seq: int,
    body: bytes,
    *,
    at_ns: int,
    offset_ns: int | None = None,
    response_id: str | None = None,
    redactor: Redactor | None = None,
) -> Event:
    """A whole non-streamed body, or one chunk of a large one.

    With a ``redactor`` (for a whole body only), the request paths a JSON
    body echoes are replaced, and meta ``redacted_paths`` names them.
    """
    meta: dict[str, Any] = {}
    if redactor is not None:
        body, hits = redactor.response_body(body)
        if hits:
            meta["redacted_paths"] = hits
    return Event(
        session_id,
        EventKind.BODY,
        seq,
        exchange_id,
        recorded_at_ns=at_ns,
        offset_ns=offset_ns,
        payload=body,
        meta=meta,
        response_id=response_id,
    )


def end_event(
    session_id: str,
    exchange_id: str,
    seq: int | None,
    outcome: Outcome,
    reason: str | None,
    *,
    at_ns: int,
    offset_ns: int | None = None,
    details: dict[str, Any] | None = None,
) -> Event:
    """The EXCHANGE_END: meta ``outcome``, ``reason`` when known, then any ``details``."""
    meta: dict[str, Any] = {"outcome": outcome.value}
    if reason:
        meta["reason"] = reason
    if details:
        meta.update(details)
    return Event(
        session_id,
        EventKind.EXCHANGE_END,
        seq,
        exchange_id,
        recorded_at_ns=at_ns,
        offset_ns=offset_ns,
        meta=meta,
    )


def redact_event(event: Event, redactor: Redactor) -> Event:
    """A stored event (from a tape) redacted as if it were being recorded now.

    Headers, URLs, request bodies and the echoes in SSE frames and whole JSON
    bodies pass through ``redactor``; headers that are not ``[name, value]``
    string pairs raise :class:`~recorder.errors.TapeError` (the tape reader
    refuses them first, naming the line) rather than go unredacted. The
    event comes back unchanged (the same object) when nothing was replaced,
    so an already redacted tape imports byte for byte. A large JSON body a
    tape holds in several ``body`` events cannot be parsed piece by piece and
    is left as it is.
    """
    if (
        event.kind in (EventKind.SSE, EventKind.BODY)
        and not redactor.json_paths
        and "headers" not in event.meta
    ):
        return event  # most of a tape: only configured paths could change them
    if event.kind is EventKind.SESSION_OPEN:
        opened = session_open_meta(event.meta, redactor)
        return event if opened == event.meta else dataclasses.replace(event, meta=opened)
    meta = dict(event.meta)
    payload = event.payload
    hits: list[str] = []
    if "headers" in meta:
        pairs = _header_pairs(meta["headers"])
        headers = redactor.header_pairs(pairs)
        if headers != meta["headers"]:
            meta["headers"] = headers
    if event.kind is EventKind.REQUEST:
        url, _, userinfo = redactor.url_redacted(str(meta.get("url", "")))
        if url != meta.get("url", ""):
            meta["url"] = url
        if userinfo:
            meta["redacted_userinfo"] = True
        payload, hits = redactor.body(payload)
    elif event.kind is EventKind.SSE:
        payload, frame_meta = redact_frame(redactor, payload)
        hits = frame_meta["redacted_paths"] if frame_meta else []
    elif event.kind is EventKind.BODY:
        payload, hits = redactor.response_body(payload)
    if hits:
        meta["redacted_paths"] = sorted({*meta.get("redacted_paths", ()), *hits})
    if meta == event.meta and payload == event.payload:
        return event
    return dataclasses.replace(event, meta=meta, payload=payload)


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    """A stored event's headers as pairs; any other shape is refused, never passed on."""
    if isinstance(headers, list) and all(
        isinstance(p, list | tuple) and len(p) == 2 and type(p[0]) is str and type(p[1]) is str
        for p in headers
    ):
        return [(p[0], p[1]) for p in headers]
    raise TapeError("an event's headers are not [name, value] pairs of strings")

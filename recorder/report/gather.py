"""What a session report shows, gathered from the log and the projections as plain values.

Guarantees: everything here is read, never inferred: call stages from the
stages projection, code, outputs and vouching positions from the audit
projection, token and container figures (with their rules) from the cost
report, container state from the containers projection, final text and
citations from the recorded response objects (or, for a stream cut off before
its final response, from its text deltas, marked partial), downloaded files
from the recorded bodies. A value the recording does not hold is ``None``,
never a guess (imports from other tools hold no arrival times: their stage
offsets are ``None`` and only the API's second-resolution ``created_at`` /
``completed_at`` remain).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from recorder import projections as P
from recorder.events import EventKind, StoredEvent, now_ns
from recorder.projections.wire import classify_url, response_object, usage_numbers
from recorder.store.store import EventStore, SessionInfo

__all__ = [
    "CallView",
    "ExchangeView",
    "FileView",
    "LogSeal",
    "SessionView",
    "gather",
    "seal",
]

_TERMINAL = ("response.completed", "response.failed", "response.incomplete")
_IMAGE_SUFFIXES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
MAX_EMBEDDED_FILE = 4 * 1024 * 1024
"""Downloaded files up to this size are embedded (as data: URIs); larger ones are described."""


@dataclass(frozen=True, slots=True)
class CallView:
    """One code interpreter call: stages, code, outputs, and the positions vouching for it."""

    call_id: str
    container_id: str | None
    status: str
    code: str
    outputs: list[dict[str, Any]] | None
    stage: P.Stage | None
    first_position: int | None
    last_position: int | None
    positions: list[int]


@dataclass(frozen=True, slots=True)
class FileView:
    """A container file the log holds: cited, downloaded, or both."""

    container_id: str
    file_id: str
    filename: str | None
    media_type: str | None
    size: int | None
    data_uri: str | None
    """The downloaded bytes, when recorded and small enough to embed."""

    @property
    def is_image(self) -> bool:
        return self.data_uri is not None and (self.media_type or "").startswith("image/")


@dataclass(slots=True)
class ExchangeView:
    """One request and what came back, as far as the log holds it."""

    id: str
    index: int
    method: str
    path: str
    status: int | None
    outcome: str | None
    started_ns: int
    ended_ns: int | None
    last_offset_ns: int | None
    """Arrival of the last recorded byte, in ns since the request was sent (None: no timing)."""
    first_position: int
    last_position: int
    model: str | None = None
    requested_model: str | None = None
    response_id: str | None = None
    response_status: str | None = None
    created_at: int | None = None
    completed_at: int | None = None
    text: str = ""
    text_partial: bool = False
    annotations: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int | None] | None = None
    error: Any = None
    calls: list[CallView] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    """The response's tool calls in output order: the item type (``: name`` for functions)."""
    tool_arguments: list[str | None] = field(default_factory=list)
    """Each tool call's ``arguments`` (function calls), ``None`` for others."""
    cost: dict[str, Any] | None = None
    """The cost report's item for this exchange (token cost, basis, rule)."""
    file: FileView | None = None

    @property
    def timed(self) -> bool:
        return self.last_offset_ns is not None


@dataclass(slots=True)
class SessionView:
    info: SessionInfo
    exchanges: list[ExchangeView]
    containers: list[dict[str, Any]]
    """Containers the session created or used, as judged at ``judged_at_ns``."""
    container_fees: list[dict[str, Any]]
    unattributed: list[dict[str, Any]]
    files: list[FileView]
    judged_at_ns: int
    first_position: int
    last_position: int
    events: int

    @property
    def timed(self) -> bool:
        return any(x.timed for x in self.exchanges)


@dataclass(frozen=True, slots=True)
class LogSeal:
    """The log's head when the report was written, and whether ``verify`` found it sound."""

    head_position: int
    head_hash: str
    verified: bool
    ok: bool | None
    checked: int
    problems: list[str]


def seal(store: EventStore, *, verify: bool) -> LogSeal:
    """The head position and hash; with ``verify``, every hash re-derived up to it.

    A verified seal also checks the projection tables the report reads against
    the log: a row edited in them is a problem, as a bad hash is.
    """
    if verify:
        from recorder.projections.check import check_projections

        report = store.verify()
        problems = [f"position {p.position}: {p.message}" for p in report.problems]
        derived = check_projections(store) if report.ok else []
        problems += [f"projection {c.describe()}" for c in derived if not c.ok]
        return LogSeal(
            report.head_position,
            report.head_hash,
            True,
            report.ok and all(c.ok for c in derived),
            report.checked,
            problems,
        )
    head = store.last_position()
    events = list(store.iter_events(head - 1)) if head else []
    head_hash = events[-1].hash if events else ""
    return LogSeal(head, head_hash, False, None, 0, [])


def _data(payload: bytes) -> Any:
    text = payload.split(b"data:", 1)[-1] if payload.startswith(b"event:") else payload
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None


def _apply_response(x: ExchangeView, response: dict[str, Any]) -> None:
    x.response_id = response.get("id") if isinstance(response.get("id"), str) else x.response_id
    model = response.get("model")
    x.model = model if isinstance(model, str) else x.model
    status = response.get("status")
    x.response_status = status if isinstance(status, str) else x.response_status
    created, completed = response.get("created_at"), response.get("completed_at")
    if isinstance(created, int):
        x.created_at = created
    if isinstance(completed, int):
        x.completed_at = completed
    x.usage = usage_numbers(response) or x.usage
    if response.get("error"):
        x.error = response["error"]
    texts: list[str] = []
    annotations: list[dict[str, Any]] = []
    tools: list[str] = []
    arguments: list[str | None] = []
    for item in response.get("output") or []:
        kind = item.get("type") if isinstance(item, dict) else None
        if isinstance(kind, str) and kind not in ("message", "reasoning"):
            name, args = item.get("name"), item.get("arguments")
            tools.append(f"{kind}: {name}" if isinstance(name, str) else kind)
            arguments.append(args if isinstance(args, str) else None)
        if not isinstance(item, dict) or kind != "message":
            continue
        for part in item.get("content") or []:
            if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                continue
            offset = sum(len(t) for t in texts)
            for a in part.get("annotations") or []:
                if isinstance(a, dict):
                    shifted = dict(a)
                    for key in ("start_index", "end_index"):
                        if isinstance(shifted.get(key), int):
                            shifted[key] += offset
                    annotations.append(shifted)
            texts.append(part["text"])
    if texts or x.text_partial:
        x.text, x.annotations, x.text_partial = "".join(texts), annotations, False
    if tools or response.get("status") in ("completed", "failed", "incomplete"):
        x.tools, x.tool_arguments = tools, arguments


def _media_type(headers: Any, filename: str | None) -> str | None:
    for pair in headers or []:
        if (
            isinstance(pair, list | tuple)
            and len(pair) == 2
            and str(pair[0]).lower() == ("content-type")
        ):
            value = str(pair[1]).split(";")[0].strip()
            if value and value != "application/octet-stream" and value != "binary/octet-stream":
                return value
    if filename:
        for suffix, media in _IMAGE_SUFFIXES.items():
            if filename.lower().endswith(suffix):
                return media
    return None


def _exchanges(
    events: list[StoredEvent],
) -> tuple[list[ExchangeView], dict[str, tuple[bytes, str | None]]]:
    """Exchange views from a session's events, plus each file download's body and media type."""
    views: dict[str, ExchangeView] = {}
    heads: dict[str, Any] = {}
    bodies: dict[str, list[bytes]] = {}
    deltas: dict[str, list[str]] = {}
    finals: set[str] = set()
    for ev in events:
        xid = ev.exchange_id
        if xid is None:
            continue
        if ev.kind is EventKind.REQUEST:
            meta = ev.meta
            url = str(meta.get("url", ""))
            view = ExchangeView(
                id=xid,
                index=len(views),
                method=str(meta.get("method", "")).upper(),
                path=urlsplit(url).path or url,
                status=None,
                outcome=None,
                started_ns=ev.recorded_at_ns,
                ended_ns=None,
                last_offset_ns=None,
                first_position=ev.position,
                last_position=ev.position,
            )
            body = _data(ev.payload)
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                view.requested_model = body["model"]
            views[xid] = view
            continue
        x = views.get(xid)
        if x is None:
            continue
        x.last_position = ev.position
        if ev.offset_ns is not None:
            x.last_offset_ns = max(x.last_offset_ns or 0, ev.offset_ns)
        if ev.kind is EventKind.RESPONSE_HEAD:
            meta = ev.meta
            status = meta.get("status")
            x.status = status if isinstance(status, int) else None
            heads[xid] = meta.get("headers")
        elif ev.kind is EventKind.SSE:
            t = ev.sse_type
            if t == "response.output_text.delta":
                data = _data(ev.payload)
                if isinstance(data, dict) and isinstance(data.get("delta"), str):
                    deltas.setdefault(xid, []).append(data["delta"])
            elif t in _TERMINAL or t == "response.created":
                response = response_object(t, _data(ev.payload))
                if response is not None:
                    _apply_response(x, response)
                    if t in _TERMINAL:
                        finals.add(xid)
            elif t == "error":
                x.error = _data(ev.payload)
        elif ev.kind is EventKind.BODY:
            bodies.setdefault(xid, []).append(ev.payload)
        elif ev.kind is EventKind.EXCHANGE_END:
            x.ended_ns = ev.recorded_at_ns
            outcome = ev.meta.get("outcome")
            x.outcome = outcome if isinstance(outcome, str) else None
    downloads: dict[str, tuple[bytes, str | None]] = {}
    for xid, parts in bodies.items():
        x = views[xid]
        body = b"".join(parts)
        endpoint = classify_url(x.method, x.path)
        if endpoint.kind == "containers.file_content" and x.status == 200:
            downloads[xid] = (body, _media_type(heads.get(xid), None))
            continue
        data = _data(body)
        response = response_object(None, data)
        if response is not None:
            _apply_response(x, response)
            finals.add(xid)
        elif isinstance(data, dict) and data.get("error"):
            x.error = data["error"]
    for xid, pieces in deltas.items():
        if xid not in finals and pieces:
            x = views[xid]
            x.text, x.text_partial = "".join(pieces), True
    return list(views.values()), downloads


def _file_view(
    cid: str, fid: str, filename: str | None, body: bytes | None, headers_media: str | None
) -> FileView:
    media = headers_media or _media_type(None, filename)
    if body is None:
        return FileView(cid, fid, filename, media, None, None)
    uri = None
    if len(body) <= MAX_EMBEDDED_FILE:
        kind = media or "application/octet-stream"
        uri = f"data:{kind};base64,{base64.b64encode(body).decode('ascii')}"
    return FileView(cid, fid, filename, media, len(body), uri)


def gather(store: EventStore, session_id: str, *, at_ns: int | None = None) -> SessionView:
    """Everything the report shows about one session (projections read, never written)."""
    info = store.find_session(session_id)
    events = list(store.session_events(info.id))
    exchanges, downloads = _exchanges(events)
    by_id = {x.id: x for x in exchanges}

    stages = {(s.exchange_id, s.call_id): s for s in P.stages(store, info.id)}
    for entry in P.audit(store, info.id):
        x = by_id.get(entry.exchange_id)
        if x is None:
            continue
        x.calls.append(
            CallView(
                call_id=entry.call_id,
                container_id=entry.container_id,
                status=entry.status,
                code=entry.code,
                outputs=entry.outputs,
                stage=stages.get((entry.exchange_id, entry.call_id)),
                first_position=entry.first_position,
                last_position=entry.last_position,
                positions=entry.positions,
            )
        )

    report = P.costs(store, by="session").to_json()
    for item in report["exchanges"]:
        if item["session_id"] == info.id and item["exchange_id"] in by_id:
            by_id[item["exchange_id"]].cost = item

    used = {c.container_id for x in exchanges for c in x.calls if c.container_id}
    judged = at_ns if at_ns is not None else now_ns()
    containers = []
    files: list[FileView] = []
    file_exchanges = {
        (e.container_id, e.file_id): xid
        for xid in downloads
        if (e := classify_url(by_id[xid].method, by_id[xid].path)).container_id
    }
    for c in P.containers(store):
        if c.session_id != info.id and c.container_id not in used:
            continue
        containers.append(c.to_json(judged))
        for f in c.files:
            xid = file_exchanges.get((c.container_id, f.file_id))
            body, media = downloads[xid] if xid else (None, None)
            view = _file_view(c.container_id, f.file_id, f.filename, body, media)
            files.append(view)
            if xid:
                by_id[xid].file = view
    shown = {c["container_id"] for c in containers}
    fees = [c for c in report["containers"] if c["container_id"] in shown]
    unattributed = [
        u for u in report["possible_unattributed_containers"] if u["session_id"] == info.id
    ]
    return SessionView(
        info=info,
        exchanges=exchanges,
        containers=containers,
        container_fees=fees,
        unattributed=unattributed,
        files=files,
        judged_at_ns=judged,
        first_position=events[0].position if events else info.open_position,
        last_position=events[-1].position if events else info.open_position,
        events=len(events),
    )

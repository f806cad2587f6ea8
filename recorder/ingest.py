"""Bringing files into the log: tapes and other tools' recordings.

Guarantees:

* A file is checked whole before anything is written: a bad line, an unknown
  format or a session already in the log writes nothing.
* Bounded transactions: events are appended in batches of at most
  :data:`BATCH_EVENTS` events (or :data:`BATCH_BYTES` of payload), one
  transaction each, so a long import never holds the log's write lock for
  more than a fraction of a second: a live recorder waiting for it gets it
  between two batches (the importer pauses briefly after each one).
* Complete or re-runnable: an import that returns has stored the whole file.
  One that is interrupted (killed, the database gone) leaves each of the
  file's sessions complete, absent, or stopped at a batch boundary (listed as
  open by ``codetape sessions``); importing the same file again stores exactly
  what is missing, so nothing is stored twice. A session the log holds with
  other content than the file's is refused as a duplicate.
* Recordings, tapes included, are redacted (:mod:`recorder.redact`) before
  anything is stored; SSE bodies are cut into one event per frame by the shared
  splitter, so the frames concatenate back to the source body exactly.
* Imports are deterministic: session and exchange ids derive from the file's
  content and times from the recording itself (the response's ``created_at``
  or the ``Date`` header), so importing the same file twice is refused as a
  duplicate and regenerating fixture tapes gives identical files.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from recorder.capture.build import (
    body_event,
    body_response_id,
    end_event,
    redact_event,
    request_event,
    response_head_event,
    sse_event,
)
from recorder.errors import CodetapeError, SessionExists, TapeError
from recorder.events import Event, EventKind, Outcome
from recorder.importers.model import RecordedExchange, RecordedSession
from recorder.outcome import StreamOutcome, outcome_for_body
from recorder.redact import Redactor
from recorder.sse import split_sse
from recorder.store.engine import translate_errors
from recorder.store.store import EventStore
from recorder.tape import read_tape

__all__ = [
    "BATCH_BYTES",
    "BATCH_EVENTS",
    "FORMATS",
    "ImportResult",
    "append_in_batches",
    "import_file",
    "recorded_session_events",
]

FORMATS = ("auto", "tape", "vcr", "chunks", "testproxy")
BATCH_EVENTS = 2000
BATCH_BYTES = 8 * 1024 * 1024
# After each batch the lock is left free this long, for a writer waiting on it.
_BATCH_PAUSE = 0.005


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one file contributed to the log."""

    path: Path
    format: str
    sessions: list[tuple[str, str]]
    """(id, name) of each imported session."""
    events: int


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:32]


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _exchange_times(exchanges: Sequence[RecordedExchange], fallback_ns: int) -> list[int]:
    """When each exchange happened; one the source does not date takes its neighbour's."""
    known = [_recorded_at_ns(x) for x in exchanges]
    result: list[int] = []
    last: int | None = None
    for index, value in enumerate(known):
        if value is None:
            later = next((v for v in known[index + 1 :] if v is not None), None)
            value = last if last is not None else later
        last = value if value is not None else last
        result.append(value if value is not None else fallback_ns)
    return result


def _recorded_at_ns(exchange: RecordedExchange) -> int | None:
    """When the source says the exchange happened, in ns since the epoch."""
    created: Any = None
    body = exchange.response_body
    if exchange.streamed:
        first = split_sse(body[:65536])[:1]
        data = first[0].json() if first else None
        if isinstance(data, dict) and isinstance(data.get("response"), dict):
            created = data["response"].get("created_at")
    elif body[:1] == b"{":
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            created = parsed.get("created_at")
    if isinstance(created, int | float) and created > 0:
        return int(created * 1_000_000_000)
    date = _header(exchange.response_headers, "date")
    if date:
        try:
            return int(email.utils.parsedate_to_datetime(date).timestamp() * 1_000_000_000)
        except (TypeError, ValueError):
            pass
    return None


def _exchange_events(
    session_id: str,
    exchange_id: str,
    exchange: RecordedExchange,
    at_ns: int,
    redactor: Redactor,
) -> list[Event]:
    # The shapes come from recorder.capture.build, shared with live capture,
    # so replay and projections see imported and captured exchanges alike.
    events = [
        request_event(
            session_id,
            exchange_id,
            method=exchange.method,
            url=exchange.url,
            headers=exchange.request_headers,
            body=exchange.request_body,
            fidelity=exchange.request_fidelity,
            redactor=redactor,
            at_ns=at_ns,
        )
    ]
    if exchange.status is None:
        events.append(
            end_event(
                session_id,
                exchange_id,
                1,
                Outcome.INTERRUPTED,
                "the source recorded no response",
                at_ns=at_ns,
            )
        )
        return events
    events.append(
        response_head_event(
            session_id,
            exchange_id,
            status=exchange.status,
            headers=exchange.response_headers,
            fidelity=exchange.fidelity,
            streamed=exchange.streamed,
            redactor=redactor,
            at_ns=at_ns,
        )
    )
    seq = 2
    if exchange.streamed:
        tracker = StreamOutcome()
        response_id: str | None = None
        for frame in split_sse(exchange.response_body):
            response_id = frame.response_id or response_id
            if frame.cut:
                tracker.cut(frame.type)  # the client dropped it: it decides nothing
            else:
                tracker.observe(frame.type, frame.json())
            events.append(
                sse_event(
                    session_id, exchange_id, seq, frame, response_id, at_ns=at_ns, redactor=redactor
                )
            )
            seq += 1
        outcome, reason = tracker.result()
        if exchange.status >= 400:
            outcome, reason = outcome_for_body(exchange.status, exchange.response_body)
    else:
        body = exchange.response_body
        events.append(
            body_event(
                session_id,
                exchange_id,
                seq,
                body,
                at_ns=at_ns,
                response_id=body_response_id(body),
                redactor=redactor,
            )
        )
        seq += 1
        outcome, reason = outcome_for_body(exchange.status, body)
    events.append(end_event(session_id, exchange_id, seq, outcome, reason, at_ns=at_ns))
    return events


def recorded_session_events(
    rec: RecordedSession, *, key: str, redactor: Redactor | None = None, fallback_ns: int = 0
) -> list[Event]:
    """The events of one imported session; ``key`` makes its ids unique and stable.

    ``fallback_ns`` dates a session whose source holds no time at all.
    """
    redactor = redactor or Redactor()
    session_id = _digest("session", key)
    times = _exchange_times(rec.exchanges, fallback_ns)
    opened = min(times) if times else fallback_ns
    open_meta: dict[str, Any] = {"name": rec.name, "labels": rec.labels, "metadata": rec.metadata}
    if rec.source:
        open_meta["source"] = rec.source
    events = [Event(session_id, EventKind.SESSION_OPEN, 0, recorded_at_ns=opened, meta=open_meta)]
    for index, (exchange, at_ns) in enumerate(zip(rec.exchanges, times, strict=True)):
        exchange_id = _digest("exchange", session_id, str(index))
        events.extend(_exchange_events(session_id, exchange_id, exchange, at_ns, redactor))
    closed = max(times) if times else opened
    events.append(Event(session_id, EventKind.SESSION_CLOSE, 1, recorded_at_ns=closed))
    return events


def _session_ids(events: Iterable[Event]) -> dict[str, str]:
    """Session id → name, for the sessions opened in ``events``."""
    return {
        ev.session_id: str(ev.meta.get("name", ""))
        for ev in events
        if ev.kind is EventKind.SESSION_OPEN
    }


def _check_streams(events: Sequence[Event], path: Path) -> None:
    """A tape must open each session it uses and number each stream densely from 0."""
    opened: set[str] = set()
    expected: dict[str, int] = {}
    for number, ev in enumerate(events, start=1):
        if ev.kind is EventKind.SESSION_OPEN:
            opened.add(ev.session_id)
        elif ev.session_id not in opened:
            raise TapeError(
                f"{path}: event {number} belongs to session {ev.session_id} "
                "which the tape never opens"
            )
        want = expected.get(ev.stream_id, 0)
        if ev.seq != want:
            raise TapeError(
                f"{path}: event {number} has seq {ev.seq} in stream {ev.stream_id}, expected {want}"
            )
        expected[ev.stream_id] = want + 1


def file_events(
    path: Path, fmt: str = "auto", redactor: Redactor | None = None
) -> tuple[str, list[Event]]:
    """Parse ``path`` into events without touching any store; returns (format, events)."""
    from recorder.importers.detect import detect_format, load_any

    if fmt not in FORMATS:
        raise CodetapeError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise CodetapeError(f"no such file: {path}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "tape":
        # A tape may come from anywhere (an older codetape, a hand edit): it is
        # redacted like any other recording; an already redacted one is unchanged.
        scrub = redactor or Redactor()
        tape_events = [redact_event(ev, scrub) for ev in read_tape(path)]
        _check_streams(tape_events, path)
        return fmt, tape_events
    content_key = hashlib.sha256(path.read_bytes()).hexdigest()
    events: list[Event] = []
    for index, rec in enumerate(load_any(path, fmt)):
        events.extend(recorded_session_events(rec, key=f"{content_key}:{index}", redactor=redactor))
    return fmt, events


def import_file(
    store: EventStore, path: Path, fmt: str = "auto", redactor: Redactor | None = None
) -> ImportResult:
    """Import one file into ``store`` (see the module docstring for what is guaranteed)."""
    path = Path(path)
    fmt, events = file_events(path, fmt, redactor)
    sessions = _session_ids(events)
    if not sessions:
        raise TapeError(f"{path}: holds no session")
    missing = _missing(store, events)
    for session_id, name in sessions.items():
        if store.has_session(session_id) and (
            not missing or not _resumable(store, session_id, events)
        ):
            raise SessionExists(
                f"{path}: session {name!r} ({session_id}) is already in the database"
            )
    append_in_batches(store, missing)
    return ImportResult(path, fmt, list(sessions.items()), len(events))


def _missing(store: EventStore, events: Sequence[Event]) -> list[Event]:
    """The events of ``events`` not in the log yet: all of them, unless an import of
    the same file was interrupted (its events are in the log in file order)."""
    stored: dict[str, int] = {}
    for session_id in {ev.session_id for ev in events}:
        for stream_id, seq in _stored_seqs(store, session_id).items():
            stored[stream_id] = seq
    if not stored:
        return list(events)
    return [ev for ev in events if ev.seq is None or ev.seq > stored.get(ev.stream_id, -1)]


def _stored_seqs(store: EventStore, session_id: str) -> dict[str, int]:
    """Highest seq stored for each stream of the session (its own and its exchanges')."""
    query = sa.text(
        "SELECT coalesce(exchange_id, session_id), max(seq) FROM events "
        "WHERE session_id = :s GROUP BY coalesce(exchange_id, session_id)"
    )
    with translate_errors(store.url), store.engine.connect() as conn:
        return {str(stream): int(seq) for stream, seq in conn.execute(query, {"s": session_id})}


def _resumable(store: EventStore, session_id: str, events: Sequence[Event]) -> bool:
    """Whether what the log holds of the session is exactly a prefix of the file's events."""
    mine = [ev for ev in events if ev.session_id == session_id]
    held = list(store.session_events(session_id))
    if len(held) > len(mine):
        return False
    return all(
        (h.kind, h.exchange_id, h.seq, h.payload) == (m.kind, m.exchange_id, m.seq, m.payload)
        for h, m in zip(held, mine, strict=False)
    )


def append_in_batches(store: EventStore, events: Sequence[Event]) -> int:
    """Append ``events`` in order, in transactions of at most :data:`BATCH_EVENTS` events
    (and :data:`BATCH_BYTES`); the number appended."""
    start = 0
    while start < len(events):
        end, size = start, 0
        while end < len(events) and end - start < BATCH_EVENTS and size < BATCH_BYTES:
            size += len(events[end].payload)
            end += 1
        store.append(events[start:end])
        start = end
        if start < len(events):
            time.sleep(_BATCH_PAUSE)
    return len(events)

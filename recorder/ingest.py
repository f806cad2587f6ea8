"""Bringing files into the log: tapes and other tools' recordings.

Guarantees:

* A file is checked whole before anything is written: a bad line, an unknown
  format or a duplicate session writes nothing; nor does, in a tape that
  carries chain hashes, a row whose hash no longer re-derives or that does
  not link (the rules of ``verify TAPE`` alone,
  :class:`recorder.integrity.tapes.TapeChain`, checked in the first pass).
  :func:`import_files` imports several, each on its own, going on past a
  bad one and reporting every file's outcome.
* Bounded transactions: a file's events are appended in batches of at most
  :data:`BATCH_EVENTS` events (or :data:`BATCH_BYTES` of payload), one
  transaction each, so a long import never holds the log's write lock for
  more than a fraction of a second: a live recorder waiting for it gets it
  between two batches (the importer pauses briefly after each one).
* Complete or re-runnable: an import that returns has stored the whole file.
  One that is interrupted (killed, the database gone, stopped by its
  ``on_batch`` callback) leaves each of the file's sessions whole, absent,
  or stopped at a batch boundary (listed as open by ``codetape sessions``);
  importing the same file again stores exactly what is missing, and nothing
  twice, and its :attr:`ImportResult.events` counts only what it added
  (:attr:`ImportResult.already` what was there).
* Nothing is silently partial: a file cut short (a tape whose session is never
  closed or whose exchange never ends, a vercel chunks file whose stream stops
  before its final event) is refused unless ``partial`` says to keep it, marked in the
  session's ``metadata.partial`` and with its open parts ended as
  ``interrupted``. A file holding no session is refused.
* No recording is imported twice: the same session already in the log is a
  duplicate, and a longer or shorter version of one (recognised by content,
  see :mod:`recorder.copies`) is refused rather than counted twice.
* Bounded memory for tapes: a tape is read twice, line by line (once to check
  it whole, once to store it), so importing one costs about a batch of
  memory whatever its size. The exception is a tape whose sessions, or
  versions of them, are already in the log: comparing them holds the file's
  events in memory, as imports of the other formats always do.
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from recorder.capture.build import (
    body_event,
    body_response_id,
    end_event,
    redact_event,
    request_event,
    response_head_event,
    session_open_meta,
    sse_event,
)
from recorder.errors import CodetapeError, DatabaseUnavailable, SessionExists, TapeError
from recorder.events import Event, EventKind, Outcome
from recorder.importers.model import RecordedExchange, RecordedSession
from recorder.outcome import StreamOutcome, outcome_for_body
from recorder.redact import Redactor
from recorder.sse import split_sse
from recorder.store.engine import translate_errors
from recorder.store.store import EventStore
from recorder.tape import (
    OpenParts,
    cut_short,
    incomplete_parts,
    iter_tape,
    iter_tape_rows,
    read_tape,
)

__all__ = [
    "BATCH_BYTES",
    "BATCH_EVENTS",
    "FORMATS",
    "AlreadyImported",
    "FileOutcome",
    "ImportResult",
    "IncompleteSource",
    "NothingToImport",
    "append_in_batches",
    "file_events",
    "import_file",
    "import_files",
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
    """Events this import added to the log."""
    partial: bool = False
    """True when the file was cut short and kept with ``--partial``."""
    already: int = 0
    """Events of the file that were in the log already, stored by an earlier import of
    it that was interrupted (this one added the rest)."""


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
        except (ValueError, RecursionError):
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
    open_meta = session_open_meta(
        {"name": rec.name, "labels": rec.labels, "metadata": rec.metadata}, redactor
    )
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

    _check_path(path, fmt)
    try:
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
            events.extend(
                recorded_session_events(rec, key=f"{content_key}:{index}", redactor=redactor)
            )
    except OSError as exc:
        raise CodetapeError(f"cannot read {path}: {exc.strerror or exc}") from None
    return fmt, events


@dataclass(slots=True)
class _TapeScan:
    """What one checking pass over a tape learns, in memory that grows with its
    sessions and exchanges, not with its events."""

    opens: list[Event]
    events: int
    next_seq: dict[str, int]
    """Stream id → the seq after its last event."""
    last_ns: dict[str, int]
    """Stream id → its last event's time."""
    latest_ns: dict[str, int]
    """Session id → the latest time of any of its events."""
    parts: OpenParts
    """What the tape leaves open (the rule every tape reader applies)."""

    def incomplete(self) -> dict[str, list[str]]:
        """Session id → what the tape leaves open in it."""
        return self.parts.by_session()


def _tape_events(path: Path, redactor: Redactor) -> Iterator[Event]:
    # A tape may come from anywhere (an older codetape, a hand edit): it is
    # redacted like any other recording; an already redacted one is unchanged.
    for ev in iter_tape(path):
        yield redact_event(ev, redactor)


def _checked_tape_events(path: Path, redactor: Redactor) -> Iterator[Event]:
    """:func:`_tape_events`, each row first checked against the chain fields it carries.

    A tape exported with hashes says what each row was; a row whose hash no
    longer re-derives (a byte changed in transit, a hand edit) refuses the
    whole file here, in the checking pass, before anything is stored. The
    check is on the row as the tape holds it, before redaction.
    """
    from recorder.integrity.tapes import check_tape_chain

    for row in check_tape_chain(path, iter_tape_rows(path)):
        yield redact_event(row.event, redactor)


def _scan_tape(path: Path, redactor: Redactor) -> _TapeScan:
    """Check a tape whole as :func:`_check_streams` does, and its rows' chain hashes,
    keeping no event but its openings."""
    scan = _TapeScan([], 0, {}, {}, {}, OpenParts())
    opened: set[str] = set()
    for number, ev in enumerate(_checked_tape_events(path, redactor), start=1):
        scan.events = number
        if ev.kind is EventKind.SESSION_OPEN:
            scan.opens.append(ev)
            opened.add(ev.session_id)
        elif ev.session_id not in opened:
            raise TapeError(
                f"{path}: event {number} belongs to session {ev.session_id} "
                "which the tape never opens"
            )
        stream = ev.stream_id
        want = scan.next_seq.get(stream, 0)
        if ev.seq != want:
            raise TapeError(
                f"{path}: event {number} has seq {ev.seq} in stream {stream}, expected {want}"
            )
        scan.next_seq[stream] = want + 1
        scan.last_ns[stream] = ev.recorded_at_ns
        latest = scan.latest_ns.get(ev.session_id)
        if latest is None or ev.recorded_at_ns > latest:
            scan.latest_ns[ev.session_id] = ev.recorded_at_ns
        scan.parts.add(ev)
    return scan


def _known_to_store(store: EventStore, opens: Sequence[Event]) -> bool:
    """Whether the log holds a session opened in ``opens``, or one that
    :func:`~recorder.copies.find_copies` would compare with one (same name and source)."""
    from recorder.copies import origin

    stored = store.sessions()
    ids = {s.id for s in stored}
    origins = {(s.name, *o) for s in stored if (o := origin(s.source)) is not None}
    for ev in opens:
        if ev.session_id in ids:
            return True
        mine = origin(ev.meta.get("source"))
        if mine is not None and (str(ev.meta.get("name", "")), *mine) in origins:
            return True
    return False


def _partial_endings(scan: _TapeScan, parts: dict[str, list[str]]) -> list[Event]:
    """The endings :func:`_keep_partial` appends, from a scan instead of the events."""
    endings: list[Event] = []
    for exchange_id, (session_id, _label) in scan.parts.requests.items():
        if exchange_id in scan.parts.ended or session_id not in parts:
            continue
        endings.append(
            end_event(
                session_id,
                exchange_id,
                scan.next_seq[exchange_id],
                Outcome.INTERRUPTED,
                "the imported file ends before this exchange did",
                at_ns=scan.last_ns[exchange_id],
            )
        )
    for session_id in parts:
        if session_id in scan.parts.closed:
            continue
        at = scan.latest_ns[session_id]
        endings.append(
            Event(
                session_id,
                EventKind.SESSION_CLOSE,
                scan.next_seq[session_id],
                recorded_at_ns=at,
                meta={"reason": "the imported file ends here (imported with --partial)"},
            )
        )
    return endings


def _marked_partial(ev: Event, parts: dict[str, list[str]]) -> Event:
    if ev.kind is not EventKind.SESSION_OPEN or ev.session_id not in parts:
        return ev
    meta = dict(ev.meta)
    metadata = dict(meta.get("metadata") or {})
    metadata["partial"] = "; ".join(parts[ev.session_id])
    meta["metadata"] = metadata
    return replace(ev, meta=meta)


def _import_tape_streaming(
    store: EventStore,
    path: Path,
    redactor: Redactor | None,
    partial: bool,
    on_batch: Callable[[int], None] | None = None,
) -> ImportResult | None:
    """Import a tape reading it twice, line by line; None when the log already holds any of
    its sessions (or a session of the same name), which the in-memory path compares."""
    scrub = redactor or Redactor()
    scan = _scan_tape(path, scrub)
    sessions = {ev.session_id: str(ev.meta.get("name", "")) for ev in scan.opens}
    if not sessions:
        raise NothingToImport(f"{path}: holds no session: nothing to import")
    if _known_to_store(store, scan.opens):
        return None
    parts = scan.incomplete()
    if parts and not partial:
        raise _incomplete_error(path, parts)
    events = (
        _marked_partial(ev, parts) for ev in _as_scanned(_tape_events(path, scrub), path, scan)
    )
    endings = _partial_endings(scan, parts) if parts else []
    stored = append_in_batches(
        store, _chain(events, endings), total=scan.events + len(endings), on_batch=on_batch
    )
    return ImportResult(path, "tape", list(sessions.items()), stored, partial=bool(parts))


def _chain(first: Iterable[Event], then: Iterable[Event]) -> Iterator[Event]:
    yield from first
    yield from then


def _incomplete_error(path: Path, parts: dict[str, list[str]]) -> IncompleteSource:
    listed = [part for session_parts in parts.values() for part in session_parts]
    return IncompleteSource(
        f"{path} is {cut_short(listed)}. Import it anyway with "
        "--partial (the session is then marked partial)"
    )


def _check_path(path: Path, fmt: str) -> None:
    if fmt not in FORMATS:
        raise CodetapeError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if path.is_dir():
        raise CodetapeError(f"{path} is a directory: name the files in it to import")
    if not path.exists():
        raise CodetapeError(f"no such file: {path}")
    if not path.is_file():
        raise CodetapeError(f"{path} is not a regular file")


def _detect(path: Path) -> str:
    from recorder.importers.detect import detect_format

    return detect_format(path)


def _incomplete(fmt: str, events: Sequence[Event]) -> dict[str, list[str]]:
    """Session id -> what is missing from it, for a source cut short."""
    names = _session_ids(events)
    found: dict[str, list[str]] = {}
    if fmt == "tape":
        # A tape's endings are recorded ones: missing ones mean the file stops early.
        per_session: dict[str, list[Event]] = {}
        for ev in events:
            per_session.setdefault(ev.session_id, []).append(ev)
        for session_id, evs in per_session.items():
            parts = incomplete_parts(evs)
            if parts:
                found[session_id] = parts
        return found
    if fmt != "chunks":
        # A test-proxy or VCR file cut short does not parse; one that parses
        # holds what its tool recorded, a stream the client broke off included.
        return found
    # vercel writes one line per event and nothing after the last: a file
    # cut at a line boundary looks like a stream that stops before its final
    # event, which the importer ends as interrupted.
    numbers: dict[str, int] = {}
    requests: dict[str, tuple[str, str]] = {}
    for ev in events:
        if ev.kind is EventKind.REQUEST and ev.exchange_id is not None:
            numbers[ev.session_id] = numbers.get(ev.session_id, 0) + 1
            requests[ev.exchange_id] = (
                f"exchange #{numbers[ev.session_id]}",
                f"{ev.meta.get('method')} {ev.meta.get('url')}",
            )
        elif (
            ev.kind is EventKind.EXCHANGE_END
            and ev.exchange_id is not None
            and ev.meta.get("outcome") == Outcome.INTERRUPTED.value
        ):
            label, line = requests.get(ev.exchange_id, ("an exchange", "?"))
            found.setdefault(ev.session_id, []).append(
                f"{label} ({line}) stops before its final event"
            )
    return {sid: parts for sid, parts in found.items() if sid in names}


def _keep_partial(events: list[Event], parts: dict[str, list[str]]) -> list[Event]:
    """Mark each partial session in its metadata, and end what the source left open.

    The endings appended (``interrupted`` exchanges, a session close) say so in
    their reason, so the log never holds an exchange that stays open forever.
    """
    result: list[Event] = []
    next_seq: dict[str, int] = {}
    last_ns: dict[str, int] = {}
    for ev in events:
        if ev.kind is EventKind.SESSION_OPEN and ev.session_id in parts:
            meta = dict(ev.meta)
            metadata = dict(meta.get("metadata") or {})
            metadata["partial"] = "; ".join(parts[ev.session_id])
            meta["metadata"] = metadata
            ev = replace(ev, meta=meta)
        result.append(ev)
        next_seq[ev.stream_id] = (ev.seq or 0) + 1
        last_ns[ev.stream_id] = ev.recorded_at_ns
    ended = {ev.exchange_id for ev in events if ev.kind is EventKind.EXCHANGE_END}
    closed = {ev.session_id for ev in events if ev.kind is EventKind.SESSION_CLOSE}
    opened_in = {
        ev.exchange_id: ev.session_id
        for ev in events
        if ev.kind is EventKind.REQUEST and ev.exchange_id is not None
    }
    for exchange_id, session_id in opened_in.items():
        if exchange_id in ended or session_id not in parts:
            continue
        result.append(
            end_event(
                session_id,
                exchange_id,
                next_seq[exchange_id],
                Outcome.INTERRUPTED,
                "the imported file ends before this exchange did",
                at_ns=last_ns[exchange_id],
            )
        )
    for session_id in parts:
        if session_id in closed:
            continue
        at = max(ev.recorded_at_ns for ev in events if ev.session_id == session_id)
        result.append(
            Event(
                session_id,
                EventKind.SESSION_CLOSE,
                next_seq[session_id],
                recorded_at_ns=at,
                meta={"reason": "the imported file ends here (imported with --partial)"},
            )
        )
    return result


class IncompleteSource(CodetapeError):
    """A file cut short: a session never closed, an exchange never ended."""


class NothingToImport(CodetapeError):
    """A file that holds no session."""


class AlreadyImported(SessionExists):
    """Every session of the file is already in the log (the same, or a longer version)."""


def _check_copies(store: EventStore, path: Path, events: list[Event]) -> None:
    """Refuse a file whose sessions, or versions of them, are already in the log."""
    from recorder.copies import find_copies

    sessions = _session_ids(events)
    present: dict[str, str] = {}
    for copy in find_copies(store, events):
        stored = copy.stored
        if copy.relation == "same":
            present[copy.new_id] = (
                f"session {copy.new_name!r} ({stored.id}) is already in the database"
            )
        elif copy.relation == "longer":
            present[copy.new_id] = (
                f"a longer version of session {copy.new_name!r} is already in the database "
                f"({stored.id}): this file is a cut copy of it"
            )
        elif copy.relation == "shorter":
            held = sum(1 for _ in store.session_events(stored.id))
            mine = sum(ev.session_id == copy.new_id for ev in events)
            raise SessionExists(
                f"{path}: session {copy.new_name!r} is a longer version of {stored.id}, "
                f"which was imported from a partial copy (the log holds {held} events of "
                f"it, this file {mine}): not imported, so that nothing is counted twice"
            )
        else:
            raise SessionExists(
                f"{path}: session id {copy.new_id} is already in the database with other "
                f"content (session {stored.name!r})"
            )
    if not present:
        return
    first = next(iter(present.values()))
    if len(present) == len(sessions):
        more = f" (and {len(present) - 1} more of its sessions)" if len(present) > 1 else ""
        raise AlreadyImported(f"{path}: {first}{more}")
    raise SessionExists(
        f"{path}: {first}; {len(present)} of its {len(sessions)} sessions are in the "
        "database already, and a file is imported whole or not at all"
    )


def import_file(
    store: EventStore,
    path: Path,
    fmt: str = "auto",
    redactor: Redactor | None = None,
    *,
    partial: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import one file into ``store`` (see the module docstring for how it is stored).

    ``on_batch`` is called after each committed batch with the number of events
    this import has committed so far (see :func:`append_in_batches`).

    Refused, with nothing written: a file holding no session
    (:class:`NothingToImport`); one whose sessions are already in the log
    (:class:`AlreadyImported`), or a longer version of a partial import
    (:class:`~recorder.errors.SessionExists`); one cut short
    (:class:`IncompleteSource`) unless ``partial``, which keeps it with each
    such session's ``metadata.partial`` saying what is missing.
    """
    path = Path(path)
    if fmt in ("tape", "auto"):
        _check_path(path, fmt)
    if fmt == "tape" or (fmt == "auto" and _detect(path) == "tape"):
        try:
            streamed = _import_tape_streaming(store, path, redactor, partial, on_batch)
        except OSError as exc:
            raise CodetapeError(f"cannot read {path}: {exc.strerror or exc}") from None
        if streamed is not None:
            return streamed
        fmt = "tape"
    fmt, events = file_events(path, fmt, redactor)
    sessions = _session_ids(events)
    if not sessions:
        raise NothingToImport(f"{path}: holds no session: nothing to import")
    resumed = _interrupted_import(store, events)
    if resumed is not None:
        # This very file's import was cut off between two batches: finish it.
        added = append_in_batches(store, resumed, on_batch=on_batch)
        return ImportResult(
            path, fmt, list(sessions.items()), added, already=len(events) - len(resumed)
        )
    _check_copies(store, path, events)
    parts = _incomplete(fmt, events)
    if parts and not partial:
        raise _incomplete_error(path, parts)
    if parts:
        events = _keep_partial(events, parts)
    added = append_in_batches(store, events, on_batch=on_batch)
    return ImportResult(path, fmt, list(sessions.items()), added, partial=bool(parts))


def _interrupted_import(store: EventStore, events: Sequence[Event]) -> list[Event] | None:
    """The events still missing when the log holds exactly a prefix of ``events``, stored in
    order by an import of this same file that stopped between two batches; else None.

    A prefix means the same sessions, ids, kinds, seqs, payloads and meta, in
    file order: a copy imported with ``--partial`` differs where it was cut,
    and is left to the duplicate checks.
    """
    stored: dict[str, int] = {}
    for session_id in {ev.session_id for ev in events}:
        stored.update(_stored_seqs(store, session_id))
    if not stored:
        return None
    missing = [ev for ev in events if ev.seq is None or ev.seq > stored.get(ev.stream_id, -1)]
    if not missing:
        return None  # all of it is there: a duplicate
    for session_id in {ev.session_id for ev in events}:
        mine = [ev for ev in events if ev.session_id == session_id]
        held = list(store.session_events(session_id))
        if len(held) > len(mine) or any(
            (h.kind, h.exchange_id, h.seq, h.payload, h.meta)
            != (m.kind, m.exchange_id, m.seq, m.payload, dict(m.meta))
            for h, m in zip(held, mine, strict=False)
        ):
            return None
    return missing


def _stored_seqs(store: EventStore, session_id: str) -> dict[str, int]:
    """Highest seq stored for each stream of the session (its own and its exchanges')."""
    query = sa.text(
        "SELECT coalesce(exchange_id, session_id), max(seq) FROM event_rows "
        "WHERE session_id = :s GROUP BY coalesce(exchange_id, session_id)"
    )
    with translate_errors(store.url), store.engine.connect() as conn:
        return {str(stream): int(seq) for stream, seq in conn.execute(query, {"s": session_id})}


def append_in_batches(
    store: EventStore,
    events: Iterable[Event],
    *,
    total: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Append ``events`` in order, in transactions of at most :data:`BATCH_EVENTS` events
    (and :data:`BATCH_BYTES`); the number appended.

    ``events`` may be a lazy iterator: only one batch is held at a time.
    ``total`` (the number it will yield) is for the message when a batch fails.
    ``on_batch`` is called after each batch is committed, with the number
    committed so far; an exception it raises (a Ctrl-C held during the commit,
    say) stops the import there, at a batch boundary.
    """
    if isinstance(events, Sequence):
        total = len(events)
    stored = size = 0
    batch: list[Event] = []
    try:
        # A lazy ``events`` may fail too (a tape changed under the import).
        for ev in events:
            if batch and (len(batch) >= BATCH_EVENTS or size >= BATCH_BYTES):
                store.append(batch)
                stored += len(batch)
                if on_batch is not None:
                    on_batch(stored)
                time.sleep(_BATCH_PAUSE)
                batch, size = [], 0
            batch.append(ev)
            size += len(ev.payload)
        if batch:
            store.append(batch)
            stored += len(batch)
            if on_batch is not None:
                on_batch(stored)
    except CodetapeError as exc:
        if not stored:
            raise
        # Say what is stored: the same import, run again, stores the rest.
        of = f" of its {total}" if total is not None else ""
        raise type(exc)(
            f"{exc}; {stored}{of} events were stored before that: "
            "import the same file again to complete it"
        ) from exc
    return stored


def _as_scanned(events: Iterable[Event], path: Path, scan: _TapeScan) -> Iterator[Event]:
    """``events`` (the second pass over a tape), checked against what the first pass saw."""
    next_seq: dict[str, int] = {}
    count = 0
    for ev in events:
        want = next_seq.get(ev.stream_id, 0)
        if ev.seq != want or count >= scan.events:
            raise TapeError(f"{path} changed while it was being imported")
        next_seq[ev.stream_id] = want + 1
        count += 1
        yield ev
    if count != scan.events:
        raise TapeError(f"{path} changed while it was being imported (it is shorter now)")


FileStatus = Literal["imported", "duplicate", "failed"]


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What became of one file of a multi-file import."""

    path: Path
    status: FileStatus
    result: ImportResult | None = None
    error: str | None = None


def import_files(
    store: EventStore,
    paths: Iterable[Path],
    fmt: str = "auto",
    redactor: Redactor | None = None,
    *,
    partial: bool = False,
    on_batch: Callable[[Path, int], None] | None = None,
) -> Iterator[FileOutcome]:
    """Import each file atomically, going on after one fails; yield each file's outcome.

    ``on_batch(path, committed)``: see :func:`import_file`.

    A file already imported is ``duplicate`` (skipped, not a failure). Once
    the database itself is unavailable, the files left are reported failed
    without being tried.
    """
    unavailable: str | None = None
    for raw in paths:
        path = Path(raw)
        if unavailable is not None:
            yield FileOutcome(path, "failed", error=f"not tried: {unavailable}")
            continue

        def committed(count: int, path: Path = path) -> None:
            if on_batch is not None:
                on_batch(path, count)

        try:
            result = import_file(store, path, fmt, redactor, partial=partial, on_batch=committed)
        except AlreadyImported as exc:
            yield FileOutcome(path, "duplicate", error=str(exc))
        except DatabaseUnavailable as exc:
            unavailable = str(exc)
            yield FileOutcome(path, "failed", error=str(exc))
        except CodetapeError as exc:
            yield FileOutcome(path, "failed", error=str(exc))
        else:
            yield FileOutcome(path, "imported", result=result)

"""The one loader of recorded exchanges, shared by the transport, the server and diff.

Guarantees:

* :func:`exchanges_from_events` turns events (from a tape or from the store,
  in log order) into :class:`Exchange` values, one per exchange that has a
  ``request`` event, in the order their requests were logged. Nothing is
  re-encoded: each :class:`Chunk` holds the exact payload of one ``sse`` or
  ``body`` event, so ``b"".join(c.data for c in x.chunks)`` is the recorded
  response body byte for byte.
* An exchange whose request was not recorded (imports from sources that keep
  no request, marked by the session's ``metadata.request_known == false``) has
  ``request_known = False``; matching treats its body as matching any body
  for the same method and path.
* :func:`load` accepts a tape path or, when no such file exists, a session
  name or id in the database, so every command takes ``TAPE_OR_SESSION``.
* A tape is judged whole before anything is served or compared: an empty
  file is refused in one line (as import refuses it), and so is a tape cut
  short (a session never closed, an exchange never ended: the rule import
  applies, :class:`recorder.tape.OpenParts`), since replaying it would pass
  a shorter recording off as the whole one. ``partial=True`` (``--partial``)
  loads it anyway, and :attr:`Recording.cut` then says what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from recorder.errors import AmbiguousSession, CodetapeError, TapeError
from recorder.events import Event, EventKind, StoredEvent
from recorder.redact import query_pairs
from recorder.tape import cut_short, incomplete_parts, read_tape

__all__ = [
    "Chunk",
    "Exchange",
    "Recording",
    "exchanges_from_events",
    "load",
    "load_session",
    "load_tape",
]

# Headers that describe the recorded transfer, not the body we replay: the
# replayed body is the decoded bytes, so a recorded ``content-encoding: gzip``
# would make httpx2 try to gunzip plain bytes, and a recorded length or
# chunked framing need not fit the replayed transfer.
TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Chunk:
    """One recorded piece of a response body (an SSE frame or a body event)."""

    data: bytes
    offset_ns: int | None
    """When it arrived, in ns since the request was sent; ``None`` if unknown."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One recorded request and the response it got."""

    id: str
    session_id: str
    index: int
    """Position of this exchange in its recording, from 0."""
    method: str
    url: str
    request_headers: tuple[tuple[str, str], ...]
    request_body: bytes
    request_known: bool
    """False when the source kept no request: its body then matches any body."""
    status: int | None
    """``None`` when no response head was recorded (the request failed)."""
    response_headers: tuple[tuple[str, str], ...]
    head_offset_ns: int | None
    streamed: bool
    chunks: tuple[Chunk, ...]
    outcome: str | None
    reason: str | None
    sse_types: tuple[str | None, ...] = field(default=())
    redacted_paths: tuple[str, ...] = field(default=())
    """Request JSON paths replaced when recorded (left out of matching on both sides)."""
    failure: str | None = None
    """The exception class the recorded call ended with (``exchange_end`` meta ``error``)."""
    timeout: bool = False
    """Whether that failure was a timeout."""

    @property
    def path(self) -> str:
        return split_url(self.url).path or "/"

    @property
    def query(self) -> list[tuple[str, str]]:
        return query_pairs(split_url(self.url).query)

    @property
    def body(self) -> bytes:
        """The whole recorded response body."""
        return b"".join(c.data for c in self.chunks)

    def request_header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.request_headers:
            if key.lower() == lowered:
                return value
        return None

    def replay_headers(self) -> list[tuple[str, str]]:
        """Response headers to send with the replayed (decoded) body.

        Transfer headers are dropped (see :data:`TRANSFER_HEADERS`); a
        non-streamed body gets a ``content-length`` that fits it.
        """
        headers = [(k, v) for k, v in self.response_headers if k.lower() not in TRANSFER_HEADERS]
        if not self.streamed:
            headers.append(("content-length", str(sum(len(c.data) for c in self.chunks))))
        return headers

    def describe(self) -> str:
        """``#N METHOD /path`` as shown in error messages."""
        query = split_url(self.url).query
        return f"#{self.index + 1} {self.method} {self.path}{'?' + query if query else ''}"


@dataclass(frozen=True, slots=True)
class Recording:
    """The exchanges of a tape or session, with where they came from."""

    source: str
    exchanges: tuple[Exchange, ...]
    cut: str | None = None
    """``cut short: ...`` when the tape was loaded with ``partial=True`` and is cut short."""

    def __len__(self) -> int:
        return len(self.exchanges)


def _pairs(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list):
        return ()
    return tuple((str(p[0]), str(p[1])) for p in raw if isinstance(p, list | tuple) and len(p) == 2)


def exchanges_from_events(events: Iterable[Event | StoredEvent]) -> list[Exchange]:
    """Group ``events`` (log order) into exchanges, in request order."""
    request_known: dict[str, bool] = {}
    grouped: dict[str, list[Event | StoredEvent]] = {}
    for ev in events:
        if ev.kind is EventKind.SESSION_OPEN:
            metadata = ev.meta.get("metadata")
            known = not (isinstance(metadata, Mapping) and metadata.get("request_known") is False)
            request_known[ev.session_id] = known
        elif ev.exchange_id is not None:
            grouped.setdefault(ev.exchange_id, []).append(ev)
    result: list[Exchange] = []
    for exchange_id, evs in grouped.items():
        evs.sort(key=lambda e: e.seq or 0)
        if evs[0].kind is not EventKind.REQUEST:
            continue  # a fragment without its request cannot be matched
        result.append(_build(exchange_id, evs, request_known, len(result)))
    return result


def _build(
    exchange_id: str,
    evs: Sequence[Event | StoredEvent],
    request_known: Mapping[str, bool],
    index: int,
) -> Exchange:
    request = evs[0]
    req_meta = request.meta
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    head_offset: int | None = None
    streamed = False
    chunks: list[Chunk] = []
    types: list[str | None] = []
    outcome: str | None = None
    reason: str | None = None
    failure: str | None = None
    timeout = False
    for ev in evs[1:]:
        if ev.kind is EventKind.RESPONSE_HEAD:
            meta = ev.meta
            status = int(meta.get("status", 0))
            headers = _pairs(meta.get("headers"))
            head_offset = ev.offset_ns
            streamed = bool(meta.get("streamed", False))
        elif ev.kind is EventKind.SSE:
            streamed = True
            chunks.append(Chunk(ev.payload, ev.offset_ns))
            types.append(ev.sse_type)
        elif ev.kind is EventKind.BODY:
            chunks.append(Chunk(ev.payload, ev.offset_ns))
        elif ev.kind is EventKind.EXCHANGE_END:
            meta = ev.meta
            outcome = meta.get("outcome")
            reason = meta.get("reason")
            error = meta.get("error")
            failure = error if isinstance(error, str) else None
            timeout = meta.get("timeout") is True
    known = (
        request_known.get(request.session_id, True) and req_meta.get("request_known") is not False
    )
    return Exchange(
        id=exchange_id,
        session_id=request.session_id,
        index=index,
        method=str(req_meta.get("method", "GET")).upper(),
        url=str(req_meta.get("url", "")),
        request_headers=_pairs(req_meta.get("headers")),
        request_body=request.payload,
        request_known=known,
        status=status,
        response_headers=headers,
        head_offset_ns=head_offset,
        streamed=streamed,
        chunks=tuple(chunks),
        outcome=outcome,
        reason=reason,
        sse_types=tuple(types),
        redacted_paths=tuple(str(p) for p in req_meta.get("redacted_paths") or ()),
        failure=failure,
        timeout=timeout,
    )


_FORMAT_NAMES = {
    "vcr": "a VCR cassette",
    "chunks": "a vercel chunks file",
    "testproxy": "a test-proxy recording",
}


_GO_ON = "Replay or compare it anyway with --partial (it then ends where the tape does)"


def load_tape(path: Path | str, *, partial: bool = False) -> Recording:
    """The exchanges of a tape file; a tape cut short is refused unless ``partial``.

    A recording in another tool's format is named as such, with the command
    that imports it, rather than reported as a malformed tape.
    """
    path = Path(path)
    try:
        events = read_tape(path)
    except TapeError as exc:
        raise _not_a_tape(path, exc) from None
    missing = incomplete_parts(events)
    if missing and not partial:
        raise TapeError(f"{path} is {cut_short(missing)}. {_GO_ON}")
    cut = cut_short(missing) if missing else None
    return Recording(str(path), tuple(exchanges_from_events(events)), cut)


def _not_a_tape(path: Path, error: TapeError) -> CodetapeError:
    from recorder.importers.detect import detect_format

    try:
        fmt = detect_format(path)
    except CodetapeError:
        fmt = "tape"
    if fmt in _FORMAT_NAMES:
        from recorder.importers.detect import load_any

        try:
            load_any(path, fmt)
        except CodetapeError as cannot:
            # Import would refuse it too (a go-vcr cassette, an empty one):
            # its reason says what to do, where "import it first" would not.
            return CodetapeError(f"{path} is not a tape, and cannot be imported: {cannot}")
        return CodetapeError(
            f"{path} is {_FORMAT_NAMES[fmt]}, not a tape: import it first with "
            f"`codetape import {path}`, then give the session's name"
        )
    return error


def load_session(ref: str, db: str | None = None) -> Recording:
    """The exchanges of the session named (or with id) ``ref`` in the database ``db``."""
    from recorder.store.store import EventStore

    with EventStore.open(db) as store:
        info = store.find_session(ref)
        events = list(store.session_events(info.id))
    return Recording(f"session {info.name or info.id}", tuple(exchanges_from_events(events)))


def load(ref: str | Path, db: str | None = None, *, partial: bool = False) -> Recording:
    """A tape file if ``ref`` names one, else a session in the database (see :func:`load_tape`
    for ``partial``)."""
    path = Path(ref)
    if path.is_file():
        return load_tape(path, partial=partial)
    if path.suffix == ".jsonl":  # tapes end so; session names never come from a file path
        raise TapeError(f"no such tape: {path}")
    try:
        return load_session(str(ref), db)
    except AmbiguousSession:
        raise  # its candidates are the answer
    except CodetapeError as exc:
        raise CodetapeError(f"{ref!r} is neither a tape file nor a known session: {exc}") from None


def split_url(url: str) -> SplitResult:
    """``urlsplit(url)``; a URL it refuses ("http://[::1") is all path, so it still compares."""
    try:
        return urlsplit(url)
    except ValueError:
        return SplitResult("", "", url, "", "")


def json_body(data: bytes) -> Any:
    """``data`` parsed as JSON, or ``None`` when it is not JSON."""
    if data.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None

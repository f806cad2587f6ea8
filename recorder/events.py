"""The event model: what one row of the immutable log holds.

Guarantees:

* An event is a frozen value. Its ``payload`` is exactly the bytes that crossed
  the wire (one SSE frame including its terminating blank line, a whole
  non-streamed body, or a request body), except the secret values redaction
  replaced, which its ``meta.redacted_paths`` names; everything else on it is
  either metadata that the recorder knew (times, ids) or a convenience parsed
  from the payload on append (``sse_event``, ``sse_type``, ``sequence_number``;
  none for a last frame the client never saw, ``meta.unterminated``).
* Concatenating the payloads of an exchange's ``SSE`` events, in ``seq``
  order, reproduces the response body byte for byte (redacted values aside).
* ``seq`` is dense from 0 within a stream: an exchange's events are one stream,
  a session's own events (open, close, gaps) are another.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Event",
    "EventKind",
    "Outcome",
    "StoredEvent",
    "assemble_event",
    "canonical_json",
    "new_id",
    "now_ns",
]


class EventKind(enum.StrEnum):
    """What an event row records."""

    SESSION_OPEN = "session_open"
    """meta: name, labels (dict[str, str]), metadata (dict), source (for imports)."""
    SESSION_CLOSE = "session_close"
    """meta: reason (optional)."""
    REQUEST = "request"
    """meta: method, url, headers (redacted, list of [name, value]); payload: request body."""
    RESPONSE_HEAD = "response_head"
    """meta: status, headers (redacted), http_version, fidelity ("wire"|"reserialized")."""
    SSE = "sse"
    """payload: one raw SSE frame; sse_event/sse_type/sequence_number parsed from it."""
    BODY = "body"
    """payload: a whole non-streamed response body (or one chunk of it)."""
    EXCHANGE_END = "exchange_end"
    """meta: outcome (an :class:`Outcome`), reason, and optional details."""
    CAPTURE_GAP = "capture_gap"
    """meta: what the recorder failed to store (exchange, reason, counts)."""
    ARCHIVED = "archived"
    """meta: the log's rows written to an archive file and sealed there (see
    :mod:`recorder.archive`): the segment's first and last position, its head
    hash, the file's name and sha256. In the archive session's own stream."""


class Outcome(enum.StrEnum):
    """How an exchange ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    CLIENT_CLOSED = "client_closed"
    TRANSPORT_ERROR = "transport_error"
    INTERRUPTED = "interrupted"
    HTTP_ERROR = "http_error"


def new_id() -> str:
    """A new opaque id for a session or an exchange (32 hex characters)."""
    return uuid.uuid4().hex


def now_ns() -> int:
    """Wall-clock time in nanoseconds since the Unix epoch."""
    return time.time_ns()


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for ``meta``: sorted keys, no spaces, UTF-8.

    Meta is stored and hashed as this text, so it must be deterministic.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Event:
    """An event to append. The store assigns its position and hash."""

    session_id: str
    kind: EventKind
    seq: int | None = None
    """Dense per stream from 0; ``None`` lets the store assign the next one."""
    exchange_id: str | None = None
    recorded_at_ns: int = field(default_factory=now_ns)
    offset_ns: int | None = None
    payload: bytes = b""
    meta: Mapping[str, Any] = field(default_factory=dict)
    sse_event: str | None = None
    sse_type: str | None = None
    sequence_number: int | None = None
    response_id: str | None = None

    @property
    def stream_id(self) -> str:
        """The id whose events share one dense ``seq``."""
        return self.exchange_id if self.exchange_id is not None else self.session_id


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read back from the log, with its global position and hash."""

    position: int
    session_id: str
    exchange_id: str | None
    seq: int
    kind: EventKind
    recorded_at_ns: int
    offset_ns: int | None
    payload: bytes
    meta_json: str
    sse_event: str | None
    sse_type: str | None
    sequence_number: int | None
    response_id: str | None
    hash_format: str
    prev_hash: str
    hash: str

    @property
    def meta(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.meta_json)
        return loaded

    def to_event(self) -> Event:
        """The appendable form of this row (drops position and hashes)."""
        return Event(
            session_id=self.session_id,
            kind=self.kind,
            seq=self.seq,
            exchange_id=self.exchange_id,
            recorded_at_ns=self.recorded_at_ns,
            offset_ns=self.offset_ns,
            payload=self.payload,
            meta=self.meta,
            sse_event=self.sse_event,
            sse_type=self.sse_type,
            sequence_number=self.sequence_number,
            response_id=self.response_id,
        )


_new_object = object.__new__
_SETTERS = {name: Event.__dict__[name].__set__ for name in Event.__slots__}
assert len(_SETTERS) == 12, "assemble_event must set every field of Event"
(
    _set_session_id,
    _set_kind,
    _set_seq,
    _set_exchange_id,
    _set_recorded_at_ns,
    _set_offset_ns,
    _set_payload,
    _set_meta,
    _set_sse_event,
    _set_sse_type,
    _set_sequence_number,
    _set_response_id,
) = (
    _SETTERS[name]
    for name in (
        "session_id", "kind", "seq", "exchange_id", "recorded_at_ns", "offset_ns",
        "payload", "meta", "sse_event", "sse_type", "sequence_number", "response_id",
    )
)  # fmt: skip


def assemble_event(
    session_id: str,
    kind: EventKind,
    seq: int | None,
    exchange_id: str | None,
    recorded_at_ns: int,
    offset_ns: int | None,
    payload: bytes,
    meta: dict[str, Any],
    sse_event: str | None,
    sse_type: str | None,
    sequence_number: int | None,
    response_id: str | None,
) -> Event:
    """The same :class:`Event` as its constructor gives, built with its slot setters.

    For the hot paths that build one per frame from values already checked:
    the frozen dataclass's ``__init__`` (a checked ``object.__setattr__`` per
    field) costs several times these setters.
    """
    event: Event = _new_object(Event)
    _set_session_id(event, session_id)
    _set_kind(event, kind)
    _set_seq(event, seq)
    _set_exchange_id(event, exchange_id)
    _set_recorded_at_ns(event, recorded_at_ns)
    _set_offset_ns(event, offset_ns)
    _set_payload(event, payload)
    _set_meta(event, meta)
    _set_sse_event(event, sse_event)
    _set_sse_type(event, sse_type)
    _set_sequence_number(event, sequence_number)
    _set_response_id(event, response_id)
    return event

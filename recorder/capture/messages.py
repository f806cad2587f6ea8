"""What a client process and its recorder child say to each other.

See :mod:`recorder.capture.child` for the client's side, :mod:`recorder.capture.worker`
for the child's.

Every message is a :class:`typing.NamedTuple` named for what it does. On the
pipe a burst of messages travels as one ``marshal`` record: a list of tuples,
each the message's class name followed by its fields. Events travel as
:func:`event_row` tuples, which :func:`event_from_row` turns back into the
very same :class:`~recorder.events.Event`.

Client to child: :class:`Attach`, :class:`Events`, :class:`Abandon`,
:class:`Flush`, :class:`Query`, :class:`Detach`. Child to client:
:class:`Reply` (to a request's token) and :class:`Progress` (unasked, after
each commit and whenever a session's store stalls or recovers).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from recorder.events import Event, EventKind, assemble_event

__all__ = [
    "Abandon",
    "Attach",
    "Detach",
    "Events",
    "Flush",
    "Message",
    "Progress",
    "Query",
    "Reply",
    "decode",
    "encode",
    "event_from_row",
    "event_row",
]

# The fields of Event, in the order of a row.
EventRow = tuple[
    str,
    str,
    int | None,
    str | None,
    int,
    int | None,
    bytes,
    dict[str, Any] | None,
    str | None,
    str | None,
    int | None,
    str | None,
]


class Attach(NamedTuple):
    """Create a session's writer (``adopt``: this child replaces one; some events are stored)."""

    token: int
    session_id: str
    url: str
    repair_dead: bool
    options: dict[str, Any]
    adopt: bool


class Events(NamedTuple):
    """A session's events, in order; ``ticket`` is the client's number for the last one."""

    session_id: str
    ticket: int
    rows: list[EventRow]


class Abandon(NamedTuple):
    """``row``'s exchange loses that event and the rest of it (the client could not send it)."""

    session_id: str
    row: EventRow
    reason: str


class Flush(NamedTuple):
    """Reply once everything sent before is stored (or, with ``fail_fast``, the store fails)."""

    token: int
    session_id: str
    timeout: float | None
    fail_fast: bool


class Query(NamedTuple):
    """Reply with the session's counters now."""

    token: int
    session_id: str


class Detach(NamedTuple):
    """Store what the session's writer holds, stop it, reply with its final counters.

    ``session_closed``: the session's last event was its ``session_close``.
    """

    token: int
    session_id: str
    timeout: float
    session_closed: bool


class Reply(NamedTuple):
    """The answer to the request ``token``: ``ok``, why not, the counters, the child's identity."""

    token: int
    ok: bool
    error: str | None
    stats: tuple[Any, ...]
    writer: dict[str, Any] | None


class Progress(NamedTuple):
    """Every event of the session up to ``ticket`` is resolved; the store's state; counters."""

    session_id: str
    ticket: int
    stalled: bool
    failing: bool
    stats: tuple[Any, ...]


Message = Attach | Events | Abandon | Flush | Query | Detach | Reply | Progress
_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (Attach, Events, Abandon, Flush, Query, Detach, Reply, Progress)
}


def encode(message: Message) -> tuple[Any, ...]:
    """The marshal-able form of ``message``."""
    return (type(message).__name__, *message)


def decode(item: tuple[Any, ...]) -> Message:
    """The message ``item`` (from :func:`encode`) stands for."""
    message: Message = _TYPES[item[0]](*item[1:])
    return message


def event_row(event: Event) -> EventRow:
    """``event`` as plain values (marshal cannot write an Event, nor a str enum)."""
    meta = event.meta
    return (
        event.session_id,
        event.kind._value_,
        event.seq,
        event.exchange_id,
        event.recorded_at_ns,
        event.offset_ns,
        event.payload,
        (meta if type(meta) is dict else dict(meta)) if meta else None,
        event.sse_event,
        event.sse_type,
        event.sequence_number,
        event.response_id,
    )


_KINDS = {kind.value: kind for kind in EventKind}


def event_from_row(row: EventRow | list[Any]) -> Event:
    """The :class:`Event` of ``row`` (slot setters: a frozen dataclass's init costs more)."""
    meta = row[7]
    return assemble_event(
        row[0], _KINDS[row[1]], row[2], row[3], row[4], row[5], row[6],
        {} if meta is None else meta, row[8], row[9], row[10], row[11],
    )  # fmt: skip

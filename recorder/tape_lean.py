"""Tape format 2: one lean line per event, saying only what the lines before do not.

Guarantees: :class:`LeanWriter` and :class:`LeanReader` keep the same state
(the previous line's fields, each stream's last ``seq``), and the writer
leaves a field out only when the reader's default for it is the event's own
value, so every event reads back equal to what was written, payload bytes
included. A field's default is:

* ``kind``, ``session``, ``exchange``, ``response_id``: the previous line's
  value (``null`` is written when it becomes absent);
* ``seq``: one more than the last ``seq`` of the same stream (session and
  exchange), or 0 for the stream's first event;
* ``at_ns``: written whole on the first line; after it ``dt_ns``, the
  difference from the previous line's time, left out when 0;
* ``offset_ns``: the previous line's, moved on by as much as the time was
  (a recorder stamps an exchange's events with its start time plus their
  offset, so a live recording's lines need no ``offset_ns`` after the first);
* ``event``, ``type``, ``sequence_number``: taken from ``data`` (the frame's
  JSON) when the line has it, else absent; ``meta``: empty.

The tape's first line and every ``session_open`` line carry ``"tape": 2``.
The payload is ``data`` (an SSE frame ``event: T\\ndata: J\\n\\n`` whose event
name is ``J``'s ``type`` and whose ``J`` is compact JSON that Python writes
back byte for byte, kept as a JSON value so it is not escaped a second time),
else ``json`` (a payload that is such a compact JSON object or array, as a
request or a response body often is), else ``text`` (UTF-8) or ``b64``, as
in format 1. Chain fields are format 1's.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from recorder.errors import TapeError
from recorder.events import Event, EventKind, StoredEvent, canonical_json

if TYPE_CHECKING:
    from collections.abc import Mapping

    from recorder.tape_line import LeanLine

__all__ = ["LEAN_VERSION", "LeanReader", "LeanWriter", "frame_data", "frame_of", "json_value"]

LEAN_VERSION = 2
_KIND_OF = {k.value: k for k in EventKind}


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def frame_of(data: dict[str, Any]) -> bytes:
    """The SSE frame a line's ``data`` stands for."""
    name = data.get("type")
    if not isinstance(name, str):
        raise ValueError("data has no string 'type'")
    return f"event: {name}\ndata: {_compact(data)}\n\n".encode()


def frame_data(payload: bytes) -> dict[str, Any] | None:
    """The JSON value a frame can be written as, or None when it would not read back exactly."""
    if not payload.startswith(b"event: ") or not payload.endswith(b"\n\n"):
        return None
    try:
        text = payload.decode("utf-8")
        head, sep, body = text[: -len("\n\n")].partition("\ndata: ")
        if not sep or "\n" in body:
            return None
        value = json.loads(body)
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            return None
        if head != "event: " + value["type"] or _compact(value) != body:
            return None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value


def json_value(payload: bytes) -> dict[str, Any] | list[Any] | None:
    """The JSON object or array a payload can be written as, or None when not byte for byte."""
    if payload[:1] not in (b"{", b"["):
        return None
    try:
        text = payload.decode("utf-8")
        value = json.loads(text)
        if not isinstance(value, dict | list) or _compact(value) != text:
            return None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value


def _derived(data: dict[str, Any] | None) -> tuple[str | None, str | None, int | None]:
    """``event``, ``type`` and ``sequence_number`` as ``data`` implies them."""
    if data is None:
        return None, None, None
    number = data.get("sequence_number")
    if not isinstance(number, int) or isinstance(number, bool):
        number = None
    return data["type"], data["type"], number


class _State:
    """What a line may leave out: the previous line's fields and each stream's last seq."""

    def __init__(self) -> None:
        self.first = True
        self.kind: str | None = None
        self.session: str | None = None
        self.exchange: str | None = None
        self.at_ns = 0
        self.offset_ns: int | None = None
        self.response_id: str | None = None
        self.seqs: dict[str, int] = {}

    def offset_at(self, at_ns: int) -> int | None:
        return None if self.offset_ns is None else self.offset_ns + (at_ns - self.at_ns)

    def next_seq(self, session: str, exchange: str | None) -> int:
        return self.seqs.get(exchange if exchange is not None else session, -1) + 1

    def advance(self, ev: Event | StoredEvent) -> None:
        self.first = False
        self.kind, self.session, self.exchange = ev.kind.value, ev.session_id, ev.exchange_id
        self.at_ns, self.offset_ns, self.response_id = (
            ev.recorded_at_ns,
            ev.offset_ns,
            ev.response_id,
        )
        if ev.seq is not None:
            stream = ev.exchange_id if ev.exchange_id is not None else ev.session_id
            self.seqs[stream] = ev.seq


class LeanWriter:
    """Turns events, in tape order, into format 2 lines (one writer per tape)."""

    def __init__(self) -> None:
        self._state = _State()

    def line(self, ev: Event | StoredEvent, chain: Mapping[str, Any] | None = None) -> str:
        """One line (without the newline) for ``ev``; ``chain`` fields go last."""
        st = self._state
        kind = ev.kind.value
        record: dict[str, Any] = {}
        if st.first or kind != st.kind:
            record["kind"] = kind
        if ev.kind is EventKind.SESSION_OPEN or st.first:
            # A tape's first line names its format, whatever its kind.
            record["tape"] = LEAN_VERSION
        if ev.session_id != st.session:
            record["session"] = ev.session_id
        if ev.exchange_id != st.exchange:
            record["exchange"] = ev.exchange_id
        if ev.seq != st.next_seq(ev.session_id, ev.exchange_id):
            record["seq"] = ev.seq
        if st.first:
            record["at_ns"] = ev.recorded_at_ns
        elif ev.recorded_at_ns != st.at_ns:
            record["dt_ns"] = ev.recorded_at_ns - st.at_ns
        if ev.offset_ns != st.offset_at(ev.recorded_at_ns):
            record["offset_ns"] = ev.offset_ns
        data = frame_data(ev.payload) if ev.kind is EventKind.SSE else None
        event, type_, number = _derived(data)
        if ev.sse_event != event:
            record["event"] = ev.sse_event
        if ev.sse_type != type_:
            record["type"] = ev.sse_type
        if ev.sequence_number != number:
            record["sequence_number"] = ev.sequence_number
        if ev.response_id != st.response_id:
            record["response_id"] = ev.response_id
        if ev.meta:
            record["meta"] = meta_value(ev.meta)
        if data is not None:
            record["data"] = data
        elif (value := json_value(ev.payload)) is not None:
            record["json"] = value
        else:
            put_payload(record, ev.payload)
        if chain:
            record.update(chain)
        st.advance(ev)
        return json_line(record)


def meta_value(meta: Any) -> Any:
    """``meta`` as a tape line holds it: key order never depends on who built the event."""
    return json.loads(canonical_json(dict(meta)))


def put_payload(record: dict[str, Any], payload: bytes) -> None:
    """Store ``payload`` in ``record`` exactly: as ``text`` when it is UTF-8, else ``b64``."""
    if payload:
        try:
            record["text"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            record["b64"] = base64.b64encode(payload).decode("ascii")


def take_payload(text: str | None, b64: str | None, where: str) -> bytes:
    """The payload :func:`put_payload` stored as ``text`` or ``b64`` (empty when neither)."""
    if b64 is not None:
        try:
            return base64.b64decode(b64, validate=True)
        except (ValueError, TypeError):
            raise TapeError(f"{where}: field 'b64': not valid base64") from None
    return text.encode("utf-8") if text is not None else b""


def json_line(record: dict[str, Any]) -> str:
    """``record`` as one compact tape line (no newline)."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    # Some line readers (Python's str.splitlines among them) break lines at
    # U+2028/U+2029; escaped, they stay inside their JSON string.
    if "\u2028" in line or "\u2029" in line:
        line = line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return line


class LeanReader:
    """Turns format 2 lines, in tape order, back into events (one reader per tape)."""

    def __init__(self) -> None:
        self._state = _State()

    def event(self, record: LeanLine, where: str) -> Event:
        """The event of a validated line; raises :class:`TapeError` naming ``where``."""
        st = self._state
        fields = record.model_fields_set
        kind_name = record.kind if "kind" in fields else st.kind
        if kind_name is None:
            raise TapeError(f"{where}: field 'kind' is missing (the tape's first line)")
        kind = _KIND_OF[kind_name]
        if kind is EventKind.SESSION_OPEN and record.tape != LEAN_VERSION:
            raise TapeError(
                f"{where}: tape format version {record.tape!r} is not {LEAN_VERSION} "
                "(the version of the tape's first line)"
            )
        session = record.session if "session" in fields else st.session
        if session is None:
            raise TapeError(f"{where}: field 'session' is missing (the tape's first line)")
        exchange = record.exchange if "exchange" in fields else st.exchange
        if st.first and record.at_ns is None:
            raise TapeError(f"{where}: field 'at_ns' is missing (the tape's first line)")
        at_ns = record.at_ns if record.at_ns is not None else st.at_ns + (record.dt_ns or 0)
        seq = record.seq if record.seq is not None else st.next_seq(session, exchange)
        if sum(x is not None for x in (record.data, record.json_, record.text, record.b64)) > 1:
            raise TapeError(f"{where}: a line holds one of data, json, text and b64, not more")
        if record.data is not None:
            try:
                payload = frame_of(record.data)
            except ValueError:
                raise TapeError(f"{where}: field 'data': has no string 'type'") from None
        elif record.json_ is not None:
            payload = _compact(record.json_).encode()
        else:
            payload = take_payload(record.text, record.b64, where)
        event, type_, number = _derived(record.data)
        ev = Event(
            session_id=session,
            kind=kind,
            seq=seq,
            exchange_id=exchange,
            recorded_at_ns=at_ns,
            offset_ns=record.offset_ns if "offset_ns" in fields else st.offset_at(at_ns),
            payload=payload,
            meta=record.meta,
            sse_event=record.event if "event" in fields else event,
            sse_type=record.type if "type" in fields else type_,
            sequence_number=(record.sequence_number if "sequence_number" in fields else number),
            response_id=record.response_id if "response_id" in fields else st.response_id,
        )
        # Each field fits the store (tape_line bounds them); what adds up may not.
        for name, value in (("at_ns", at_ns), ("offset_ns", ev.offset_ns), ("seq", seq)):
            if value is not None and not -(2**63) <= value < 2**63:
                raise TapeError(
                    f"{where}: the {name} this line adds up to ({value}) does not fit in the "
                    "log (a signed 64-bit integer)"
                )
        st.advance(ev)
        return ev

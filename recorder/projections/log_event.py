"""The log event as projections see it: one read row, its JSON parsed once, on demand.

Guarantees:

* **Parsed once, shared.** A :class:`LogEvent`'s ``meta`` and ``data`` are
  parsed at most once and the same objects go to every projection the event
  goes to (which must not mutate them).
* **Same answer as a full parse.** :func:`delta_fields` cuts a delta's
  ``item_id`` and ``delta`` out of the frame's JSON text, or returns None when
  the frame has any other shape, so its result is always what parsing the
  whole frame would give (:meth:`LogEvent.delta_fields` falls back to that).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from recorder.events import EventKind
from recorder.projections.json_text import may_hold_surrogates, sse_json, valid_unicode

__all__ = ["DeltaHandler", "LogEvent", "Parsed", "Row", "delta_fields"]

Row = Sequence[Any]
"""One event row as read: :data:`~recorder.projections.log_read.READ_COLUMNS`
in order, the payload decoded (what :class:`LogEvent` takes)."""

DeltaHandler = Callable[[Row, str | None, str | None], None]
"""Called with a delta event's row and its (``item_id``, ``delta``)."""

_KINDS = {k.value: k for k in EventKind}


class LogEvent:
    """One event row as projections read it, its payload's JSON parsed once, on demand.

    Only the columns projections use (no hashes: ``verify`` owns those).
    ``meta`` and ``data`` are parsed once and shared by every projection the
    event goes to: they must not be mutated.
    """

    __slots__ = (
        "_data",
        "_meta",
        "exchange_id",
        "kind",
        "meta_json",
        "offset_ns",
        "payload",
        "position",
        "recorded_at_ns",
        "session_id",
        "sse_type",
    )

    position: int
    session_id: str
    exchange_id: str | None
    recorded_at_ns: int
    offset_ns: int | None
    sse_type: str | None
    meta_json: str | None
    """None for SSE events, whose meta is always empty (not read: see
    :data:`~recorder.projections.log_read.READ_COLUMNS`)."""

    def __init__(self, row: Sequence[Any]) -> None:
        (
            self.position,
            self.session_id,
            self.exchange_id,
            kind,
            self.recorded_at_ns,
            self.offset_ns,
            self.sse_type,
            self.meta_json,
            payload,
        ) = row
        self.kind: EventKind = _KINDS[kind]
        self.payload: bytes = payload if isinstance(payload, bytes) else bytes(payload)
        self._data: Any = _UNSET
        self._meta: dict[str, Any] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        # Parsed once: every projection reads the meta of every non-SSE event.
        meta = self._meta
        if meta is None:
            meta = self._meta = json.loads(self.meta_json) if self.meta_json is not None else {}
        return meta

    @property
    def data(self) -> Any:
        """The JSON in the payload (SSE ``data``, a JSON body), else ``None``."""
        if self._data is _UNSET:
            value: Any = None
            if self.kind is EventKind.SSE:
                value = sse_json(self.payload)
            elif self.kind in (EventKind.BODY, EventKind.REQUEST):
                head = self.payload[:1]
                if head in (b"{", b"[", b" ", b"\n"):
                    try:
                        value = json.loads(self.payload)
                    except (ValueError, RecursionError):
                        value = None
                    if may_hold_surrogates(self.payload):
                        value = valid_unicode(value)
            self._data = value
        return self._data

    def delta_fields(self) -> tuple[str | None, str | None]:
        """(``item_id``, ``delta``) of a delta event: :func:`delta_fields`, else from ``data``."""
        if self._data is _UNSET:
            fields = delta_fields(self.payload)
            if fields is not None:
                return fields
        data = self.data
        if not isinstance(data, dict):
            return None, None
        item_id, delta = data.get("item_id"), data.get("delta")
        return (
            item_id if isinstance(item_id, str) else None,
            delta if isinstance(delta, str) else None,
        )


def delta_fields(raw: bytes) -> tuple[str | None, str | None] | None:
    """(``item_id``, ``delta``) cut out of a delta frame's JSON text, or None to parse it.

    Deltas are most of the log and these two strings are all projections
    read from them, so they are cut out of the JSON text directly (by a
    regex when the value holds no escape, else with the C string decoder
    json uses); a frame of any other shape gives None, and the caller parses
    it (:meth:`LogEvent.delta_fields`), so the result is always what the
    full parse would give.
    """
    if not raw.startswith(b"event: ") or b"\r" in raw:
        return None
    # The usual shape first: each key once, a plain string right after it
    # (no space, no escape), matched by one regex each.
    if raw.count(b'"delta":') == 1 and raw.count(b'"item_id":') == 1:
        found_delta = _PLAIN_DELTA.search(raw)
        if found_delta is not None:
            found_item = _PLAIN_ITEM_ID.search(raw)
            if found_item is not None:
                return (
                    found_item.group(1).decode("utf-8", "replace"),
                    found_delta.group(1).decode("utf-8", "replace"),
                )
    delta = _bytes_field(raw, b'"delta":')
    item_id = _bytes_field(raw, b'"item_id":')
    if delta is not None and item_id is not None:
        return item_id, delta
    return None


_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]
_ESCAPED = re.compile(rb"[\x00-\x1f\\]")
# A key that occurs once, then a string without escapes or control characters:
# its bytes are the value (what _bytes_field would return, decoded alike).
_PLAIN_DELTA = re.compile(rb'"delta":"([^"\\\x00-\x1f]*)"')
_PLAIN_ITEM_ID = re.compile(rb'"item_id":"([^"\\\x00-\x1f]*)"')


def _bytes_field(raw: bytes, key: bytes) -> str | None:
    """:func:`_string_field` on the frame's bytes, decoding only the value.

    Most values hold no escape and no control character: then the value is
    the bytes up to the next quote, and decoding just them gives what
    decoding the whole frame and scanning would (``key`` and quotes are ASCII,
    which UTF-8 never uses inside a multi-byte character, nor does the
    ``replace`` handler swallow). Anything else takes the general path.
    """
    at = raw.find(key)
    if at < 0 or raw.find(key, at + 1) >= 0:
        return None
    end = at + len(key)
    while raw[end : end + 1] == b" ":
        end += 1
    if raw[end : end + 1] != b'"':
        return None
    close = raw.find(b'"', end + 1)
    if close >= 0:
        value = raw[end + 1 : close]
        if _ESCAPED.search(value) is None:
            return value.decode("utf-8", "replace")
    return _string_field(raw.decode("utf-8", "replace"), key.decode())


def _string_field(text: str, key: str) -> str | None:
    """The string value of the only ``key`` in a flat JSON object's text, else None.

    An unescaped ``"key":`` can only be a key: inside a JSON string its quotes
    would be escaped. A key seen twice, or a value that is not a string, gives
    None (the caller then parses the whole frame).
    """
    at = text.find(key)
    if at < 0 or text.find(key, at + 1) >= 0:
        return None
    end = at + len(key)
    while text[end : end + 1] == " ":
        end += 1
    if text[end : end + 1] != '"':
        return None
    try:
        value, _ = _scanstring(text, end + 1)
    except ValueError:
        return None
    clean: str = valid_unicode(value)
    return clean


Parsed = LogEvent
"""What :meth:`Projection.apply` receives."""

_UNSET: Any = object()

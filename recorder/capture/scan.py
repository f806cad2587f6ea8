"""The fields capture stores beside an SSE frame, read without parsing the whole frame.

Every Responses API event starts ``{"type":"...","sequence_number":N,`` (the
API writes those two keys first; the fixtures' real recordings all do). For
such a frame :func:`frame_fields` slices the type and number out of the
``data`` text: a few string operations instead of a JSON parse, which costs
more than everything else capture does per frame. Frames that need more
(``response.*`` events carrying the response object, whose id capture keeps,
and the terminal events that decide the outcome) and frames of any other
shape are parsed in full.

:func:`simple_frame` does the same on a frame's raw bytes, for a chunk the
splitter has vouched is exactly one frame: then not even the frame's text is
decoded.

Guarantee: for a frame whose ``data`` is one JSON object without duplicate
keys, the type and sequence number are those a full parse gives (the stored
payload is the wire's bytes either way; these fields are conveniences).
"""

from __future__ import annotations

from typing import Any, Final

from recorder.outcome import _TERMINAL as TERMINAL_TYPES
from recorder.redact import ECHO_TYPES
from recorder.sse import SSEFrame

__all__ = ["NOT_PARSED", "frame_fields", "simple_frame"]

NOT_PARSED: Final = object()
"""What :func:`frame_fields` gives for the parsed value of a frame it did not parse."""
# Frames capture must parse in full: they decide the outcome, or they carry the
# response object (its id, and request fields it echoes that may need redacting).
_PARSE_TYPES: Final = frozenset(TERMINAL_TYPES) | ECHO_TYPES

_TYPE_KEY: Final = '{"type":"'
_NUMBER_KEY: Final = ',"sequence_number":'
_RESPONSE_KEY: Final = ',"response":'


_B_EVENT: Final = b"event: "
_B_DATA_TYPE: Final = b'data: {"type":"'
_B_NUMBER_KEY: Final = b',"sequence_number":'
_B_RESPONSE_KEY: Final = b',"response":'


def simple_frame(raw: bytes) -> tuple[str, int] | None:
    """``(type, sequence_number)`` of a whole frame that is exactly
    ``event: T`` and ``data: {"type":"T","sequence_number":N,...}``, when capture
    needs nothing more from it; None for any other frame (parse it in full).
    """
    if not raw.startswith(_B_EVENT):
        return None
    eol = raw.find(b"\n", 7)
    start = eol + 16
    if eol < 8 or not raw.startswith(_B_DATA_TYPE, eol + 1):
        return None
    end = raw.find(b'"', start)
    name = raw[7:eol]
    if raw[start:end] != name or b"\\" in name or not raw.startswith(_B_NUMBER_KEY, end + 1):
        return None
    first = end + 20
    stop = raw.find(b",", first)
    digits = raw[first:stop]
    if (
        stop <= first
        or not digits.isdigit()
        or (digits[0] == 48 and stop > first + 1)  # a leading zero is not JSON
        or raw.startswith(_B_RESPONSE_KEY, stop)
        or raw.find(b"\n", stop) != len(raw) - 2  # one data line, nothing after it
    ):
        return None
    event_type = name.decode("utf-8", "replace")
    if event_type in _PARSE_TYPES:
        return None
    return event_type, int(digits)


def frame_fields(frame: SSEFrame) -> tuple[str | None, int | None, Any]:
    """``(type, sequence_number, parsed)`` of ``frame``.

    ``parsed`` is the frame's JSON value when it was parsed in full (the
    caller reads the response id and the outcome from it; ``None`` when the
    data is not JSON), else :data:`NOT_PARSED`.
    """
    data = frame.data
    if data is not None and data.startswith(_TYPE_KEY):
        end = data.find('"', 9)
        event_type = data[9:end]
        if end > 9 and "\\" not in event_type and data.startswith(_NUMBER_KEY, end + 1):
            start = end + 20
            stop = data.find(",", start)
            digits = data[start:stop]
            if (
                stop > start
                and digits.isascii()
                and digits.isdigit()
                and (digits[0] != "0" or stop == start + 1)
                and event_type not in _PARSE_TYPES
                and not data.startswith(_RESPONSE_KEY, stop)
            ):
                return event_type, int(digits), NOT_PARSED
    obj = frame.json()
    if type(obj) is not dict:
        return None, None, obj
    value = obj.get("type")
    parsed_type = value if isinstance(value, str) else None
    value = obj.get("sequence_number")
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    return parsed_type, number, obj

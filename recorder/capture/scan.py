"""The fields capture stores beside an SSE frame, read without parsing the whole frame.

Every Responses API event starts ``{"type":"...","sequence_number":N,`` (the
API writes those two keys first; the fixtures' real recordings all do). For
such a frame :func:`frame_fields` slices the type and number out of the
``data`` text: a few string operations instead of a JSON parse, which costs
more than everything else capture does per frame. Frames that need more
(``response.*`` events carrying the response object, whose id capture keeps,
and the terminal events that decide the outcome) and frames of any other
shape are parsed in full.

Guarantee: for a frame whose ``data`` is one JSON object without duplicate
keys, the type and sequence number are those a full parse gives (the stored
payload is the wire's bytes either way; these fields are conveniences).
"""

from __future__ import annotations

from typing import Any, Final

from recorder.outcome import _TERMINAL as TERMINAL_TYPES
from recorder.sse import SSEFrame

__all__ = ["frame_fields"]

_TYPE_KEY: Final = '{"type":"'
_NUMBER_KEY: Final = ',"sequence_number":'
_RESPONSE_KEY: Final = ',"response":'


def frame_fields(frame: SSEFrame) -> tuple[str | None, int | None, Any]:
    """``(type, sequence_number, parsed)`` of ``frame``.

    ``parsed`` is the frame's JSON value when it was parsed in full (the
    caller reads the response id and the outcome from it), else ``None``.
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
                and event_type not in TERMINAL_TYPES
                and not data.startswith(_RESPONSE_KEY, stop)
            ):
                return event_type, int(digits), None
    obj = frame.json()
    if type(obj) is not dict:
        return None, None, obj
    value = obj.get("type")
    parsed_type = value if isinstance(value, str) else None
    value = obj.get("sequence_number")
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    return parsed_type, number, obj

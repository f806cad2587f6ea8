"""The fields capture stores beside an SSE frame, read without parsing the whole frame.

Every Responses API event starts ``{"type":"...","sequence_number":N,`` (the
API writes those two keys first; the fixtures' real recordings all do; a
producer that re-serializes them with ``json.dumps`` defaults writes
``{"type": "...", "sequence_number": N,``, read the same way). For such a
frame :func:`frame_fields` matches the type and number at the head of the
``data`` text: one regular expression instead of a JSON parse, which costs
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

import re
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

# JSON allows blanks between tokens: compact producers (the API) write none,
# ``json.dumps`` defaults write one after ``:`` and ``,``; both are read here.
# (W stands for them; inside the lookahead, so backtracking cannot get around it.)
_HEAD = r'\{W"type"W:W"([^"\\\n]+)"W,W"sequence_number"W:W(0|[1-9][0-9]*)W,(?!W"response")'
_HEAD = _HEAD.replace("W", r"[ \t]*")
_DATA_HEAD: Final = re.compile(_HEAD)
_FRAME_HEAD: Final = re.compile(("event: ([^\\n\\\\]+)\\ndata: " + _HEAD).encode())


def simple_frame(raw: bytes) -> tuple[str, int] | None:
    """``(type, sequence_number)`` of a whole frame that is exactly
    ``event: T`` and ``data: {"type":"T","sequence_number":N,...}``, when capture
    needs nothing more from it; None for any other frame (parse it in full).
    """
    match = _FRAME_HEAD.match(raw)
    if match is None:
        return None
    name = match[1]
    if name != match[2] or raw.find(b"\n", match.end()) != len(raw) - 2:
        return None  # the type differs from the name, or more lines follow
    event_type = name.decode("utf-8", "replace")
    if event_type in _PARSE_TYPES:
        return None
    return event_type, int(match[3])


def frame_fields(frame: SSEFrame) -> tuple[str | None, int | None, Any]:
    """``(type, sequence_number, parsed)`` of ``frame``.

    ``parsed`` is the frame's JSON value when it was parsed in full (the
    caller reads the response id and the outcome from it; ``None`` when the
    data is not JSON), else :data:`NOT_PARSED`.
    """
    data = frame.data
    if data is not None:
        match = _DATA_HEAD.match(data)
        if match is not None and match[1] not in _PARSE_TYPES:
            return match[1], int(match[2]), NOT_PARSED
    obj = frame.json()
    if type(obj) is not dict:
        return None, None, obj
    value = obj.get("type")
    parsed_type = value if isinstance(value, str) else None
    value = obj.get("sequence_number")
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    return parsed_type, number, obj

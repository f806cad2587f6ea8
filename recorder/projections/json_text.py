"""The JSON text projections store and the JSON they read from frames.

Guarantees:

* **One encoding.** Every JSON value a projection stores is :func:`dump_json`
  (compact, non-ASCII kept), so equal values are equal text in every table.
* **Storable text.** Parsed values pass through :func:`valid_unicode` wherever
  they may hold a lone surrogate (which no database stores as text): each
  becomes U+FFFD; the log keeps the exact bytes.
* **Same parse as the SSE parser.** :func:`sse_json` gives what
  ``parse_frame(raw).json()`` gives (but for lone surrogates), through a fast
  path for the frame shape OpenAI sends.
* **Made once per batch.** :func:`shared_json` encodes a large value several
  projections store once, until :func:`forget_shared` (the end of the batch).
"""

from __future__ import annotations

import json
import re
from typing import Any

from recorder.sse import parse_frame

__all__ = [
    "dump_json",
    "forget_shared",
    "may_hold_surrogates",
    "shared_json",
    "sse_json",
    "valid_unicode",
]


def dump_json(value: Any) -> str:
    """Compact JSON, non-ASCII kept: the one encoding projections store JSON values in."""
    return _dumps(value, separators=(",", ":"), ensure_ascii=False)


_dumps = json.dumps
_SHARED: dict[int, tuple[Any, str]] = {}


def shared_json(value: list[Any]) -> str:
    """:func:`dump_json` of a large parsed value that several projections store.

    Code interpreter outputs are the bulk of the bytes the chunks and audit
    projections write, and both store the same parsed list (the runner hands
    every projection the same :class:`LogEvent`): the text is made once per
    batch. Keyed by identity, and the entry holds the value, so an id cannot
    be reused while it is remembered; parsed values are never mutated.
    Forgotten at the end of every batch (:func:`forget_shared`).
    """
    key = id(value)
    found = _SHARED.get(key)
    if found is not None and found[0] is value:
        return found[1]
    text = dump_json(value)
    _SHARED[key] = (value, text)
    return text


def forget_shared() -> None:
    """Drop every text :func:`shared_json` remembers: called at the end of every batch."""
    _SHARED.clear()


def sse_json(raw: bytes) -> Any:
    """A frame's ``data`` as JSON; same result as ``parse_frame(raw).json()``.

    Except for lone surrogates, which become U+FFFD (see :func:`valid_unicode`).
    """
    # Fast path for the shape OpenAI sends, exactly "event: X\ndata: {...}\n\n":
    # one data line, no CR, no comment, nothing after it.
    if raw.startswith(b"event: ") and raw.endswith(b"}\n\n") and b"\r" not in raw:
        at = raw.find(b"\ndata: ")
        if at > 0 and raw.count(b"\n", at + 1) == 2:
            try:
                value = json.loads(raw[at + 7 : -2].decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                return None
            return valid_unicode(value) if may_hold_surrogates(raw) else value
    # Only a stream's first frame can hold a BOM; ignoring one elsewhere is harmless.
    value = parse_frame(raw).json()
    # A copy: the frame caches its parse.
    return valid_unicode(value) if may_hold_surrogates(raw) else value


# Only a \uDXXX escape can put a surrogate into parsed JSON (raw bytes are
# decoded with "replace"); json.loads joins a valid pair into one character,
# so any surrogate left is alone and cannot be stored as UTF-8 text.
may_hold_surrogates = re.compile(rb"\\u[dD]").search
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(value: Any) -> Any:
    """``value`` (parsed JSON) with every lone surrogate replaced by U+FFFD.

    JSON may escape one (``"\\ud800"``); no database stores it as text. The
    projections show U+FFFD; the log keeps the exact bytes.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {valid_unicode(k): valid_unicode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_unicode(v) for v in value]
    return value

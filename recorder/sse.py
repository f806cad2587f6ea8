"""Incremental, byte-exact splitting of a ``text/event-stream`` body into frames.

This is the one SSE splitter shared by capture, the importers, the proxy and
replay.

Guarantee
---------
For any input cut into any sequence of chunks::

    s = SSESplitter()
    frames = [f for chunk in chunks for f in s.feed(chunk)] + s.flush()
    assert b"".join(f.raw for f in frames) == b"".join(chunks)

and the frames (their ``raw`` bytes and parsed fields) are the same whatever
the chunking: a frame is emitted as soon as its end is known from the bytes
seen so far, and never earlier.

Framing rules (WHATWG "event stream interpretation")
----------------------------------------------------
* A line terminator is ``"\\r\\n"``, ``"\\n"`` or ``"\\r"``. A frame ends with a
  blank line, i.e. at the end of the second of two consecutive terminators.
  ``raw`` includes that terminating blank line.
* A chunk ending in ``"\\r"`` is ambiguous (the next byte may be the ``"\\n"``
  of the same terminator): a frame whose blank line might still grow is held
  back until the next byte or :meth:`SSESplitter.flush` decides it.
* Leading blank lines (blank lines between the end of one frame and the first
  non-blank line of the next, or at the very start of the stream) dispatch
  nothing, so they are **attached to the front of the following frame's**
  ``raw``. A frame therefore always holds at least one non-blank line, except
  for a final frame made only of trailing blank lines, which :meth:`flush`
  emits (with every field ``None``) so that no byte is lost.
* A UTF-8 byte order mark at the very start of the stream stays in the first
  frame's ``raw`` but is ignored for parsing (WHATWG strips one leading BOM).
* At end of stream, :meth:`SSESplitter.flush` returns whatever bytes remain as
  one final frame, unterminated or not; its :attr:`SSEFrame.terminated` tells
  whether a spec-following client would have dispatched it, and
  :attr:`SSEFrame.cut` whether it held an event the client dropped.

Field parsing (per frame)
-------------------------
``raw`` is decoded as UTF-8 with ``errors="replace"`` (``raw`` itself is kept
exact). Lines starting with ``:`` are comments. A line without ``:`` is a field
name with an empty value. Exactly one space after the first ``:`` is removed.
``event`` is the last ``event`` value; ``data`` is every ``data`` value joined
with ``"\\n"``, or ``None`` when the frame has no ``data`` line (a comment-only
frame has ``data is None``); ``id`` is the last ``id`` value that holds no NUL;
``retry`` is the last ``retry`` value made of ASCII digits only (and
at most 4,300 of them, Python's limit; the SDK ignores longer ones too). ``id`` is per
frame: the splitter does not carry the "last event ID" over to later frames.
Unknown field names are ignored. Field names are case-sensitive.
"""

from __future__ import annotations

import json as _jsonlib
import re
from collections.abc import Callable
from contextlib import suppress as _suppress
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["SSEFrame", "SSESplitter", "parse_frame", "split_sse"]

_BOM: Final = b"\xef\xbb\xbf"
# Two consecutive line terminators always contain one of these byte pairs, and
# the earliest match ``p`` of them means "the second terminator starts at p+1"
# ("\r\n\r" and "\r\n\n" contain "\n\r" and "\n\n"; "\r\n" alone is one
# terminator and matches nothing).
_BLANK_LINE: Final = re.compile(rb"\n[\r\n]|\r\r")
_NOT_EOL: Final = re.compile(rb"[^\r\n]")
_LF: Final = 10
_CR: Final = 13


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class SSEFrame:
    """One SSE frame: its exact bytes plus the fields parsed from them."""

    raw: bytes
    """The bytes of this frame exactly as they appeared, including any leading
    blank lines and the terminating blank line (for a final frame at EOF:
    whatever bytes remained)."""
    event: str | None = None
    """Value of the last ``event:`` field, ``None`` if none."""
    data: str | None = None
    """``data`` lines joined with ``"\\n"``; ``None`` when there is no data line."""
    id: str | None = None
    """Value of the last ``id:`` field in this frame (without NUL), else ``None``."""
    retry: int | None = None
    """Value of the last all-ASCII-digits ``retry:`` field, else ``None``."""
    _parsed: Any = field(default=_UNSET, init=False, repr=False, compare=False)

    def json(self) -> Any | None:
        """``data`` parsed as JSON (cached: do not mutate), ``None`` if not JSON."""
        parsed = self._parsed
        if parsed is _UNSET:
            parsed = _json_or_none(self.data)
            _set_parsed(self, parsed)
        return parsed

    def fields(self) -> tuple[str | None, int | None, str | None]:
        """``(type, sequence_number, response_id)`` from one look at :meth:`json`.

        The same values as the three properties; recording needs all three
        for every frame, so this saves two lookups on the hot path.
        """
        obj = self.json()
        if type(obj) is not dict:
            return None, None, None
        value = obj.get("type")
        event_type = value if isinstance(value, str) else None
        value = obj.get("sequence_number")
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        response = obj.get("response")
        response_id = None
        if isinstance(response, dict):
            value = response.get("id")
            if isinstance(value, str):
                response_id = value
        return event_type, number, response_id

    @property
    def type(self) -> str | None:
        """``data["type"]`` when ``data`` is a JSON object with a string ``type``."""
        obj = self.json()
        if isinstance(obj, dict):
            value = obj.get("type")
            if isinstance(value, str):
                return value
        return None

    @property
    def sequence_number(self) -> int | None:
        """``data["sequence_number"]`` when it is an int (not a bool)."""
        obj = self.json()
        if isinstance(obj, dict):
            value = obj.get("sequence_number")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    @property
    def response_id(self) -> str | None:
        """``data["response"]["id"]`` when present (``response.created`` etc.)."""
        obj = self.json()
        if isinstance(obj, dict):
            response = obj.get("response")
            if isinstance(response, dict):
                value = response.get("id")
                if isinstance(value, str):
                    return value
        return None

    @property
    def terminated(self) -> bool:
        """True when ``raw`` has a non-blank line and ends with a blank line.

        Every frame returned by :meth:`SSESplitter.feed` is terminated; only the
        frame returned by :meth:`SSESplitter.flush` may not be (a stream cut
        mid-event). A spec-following client does not dispatch an unterminated
        frame.
        """
        raw = self.raw
        if raw.endswith(b"\r\n"):
            rest = raw[:-2]
        elif raw.endswith((b"\n", b"\r")):
            rest = raw[:-1]
        else:
            return False
        return rest.endswith((b"\n", b"\r")) and bool(rest.strip(b"\r\n"))

    @property
    def cut(self) -> bool:
        """True for a frame that holds a line but no blank line ends it.

        Only the frame :meth:`SSESplitter.flush` returns can be cut (the
        stream stopped mid-event). The openai SDK's decoder, like any
        spec-following client, dispatches an event only at a blank line, so
        the client never sees a cut frame: its bytes reached the client but no
        event did. A final frame of blank lines only is not cut (it holds no
        event to drop).
        """
        return not self.terminated and bool(self.raw.strip(b"\r\n"))


# ``json.loads`` decodes with a default JSONDecoder; calling the C scanner of
# one directly skips two regex matches and three Python calls per frame (about
# half the cost of parsing a typical small event). Same options, same values.
_DECODER: Any = _jsonlib.JSONDecoder()  # Any: typeshed does not declare scan_once
_scan_once: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once


def _json_or_none(data: str | None) -> Any | None:
    """``json.loads(data)``, or ``None`` when ``data`` is ``None`` or not JSON."""
    if data is None:
        return None
    if data[:1] == "{" and data[-1:] == "}":
        # No whitespace to skip at either end: the text is JSON exactly when
        # one value scanned from 0 ends at the end. Anything else (an error,
        # trailing text) is left to json.loads to decide.
        try:
            parsed, end = _scan_once(data, 0)
        except (ValueError, RecursionError, StopIteration):
            pass
        else:
            if end == len(data):
                return parsed
    try:
        return _jsonlib.loads(data)
    except (ValueError, RecursionError):
        return None


_new_object = object.__new__
_set_raw = SSEFrame.__dict__["raw"].__set__
_set_event = SSEFrame.__dict__["event"].__set__
_set_data = SSEFrame.__dict__["data"].__set__
_set_id = SSEFrame.__dict__["id"].__set__
_set_retry = SSEFrame.__dict__["retry"].__set__
_set_parsed = SSEFrame.__dict__["_parsed"].__set__


def _frame(
    raw: bytes, event: str | None, data: str | None, id_: str | None, retry: int | None
) -> SSEFrame:
    """``SSEFrame(raw, event, data, id_, retry)``, in half the time (slot setters)."""
    frame: SSEFrame = _new_object(SSEFrame)
    _set_raw(frame, raw)
    _set_event(frame, event)
    _set_data(frame, data)
    _set_id(frame, id_)
    _set_retry(frame, retry)
    _set_parsed(frame, _UNSET)
    return frame


def _parse(raw: bytes, strip_bom: bool, cr_free: bool = False) -> SSEFrame:
    """The frame of ``raw``; ``cr_free`` says the caller has checked it holds no CR."""
    text = raw.decode("utf-8", "replace")
    # Fast path for the OpenAI shape, exactly "event: X\ndata: Y\n\n".
    if text.startswith("event: "):
        i = text.find("\n", 7)
        if text.startswith("data: ", i + 1):
            j = text.find("\n", i + 7)
            if j == len(text) - 2 and text[-1] == "\n" and (cr_free or b"\r" not in raw):
                return _frame(raw, text[7:i], text[i + 7 : j], None, None)
    if strip_bom and text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    event: str | None = None
    data: list[str] | None = None
    id_: str | None = None
    retry: int | None = None
    for line in text.split("\n"):
        if not line or line[0] == ":":
            continue
        name, _, value = line.partition(":")
        if value and value[0] == " ":
            value = value[1:]
        if name == "data":
            if data is None:
                data = [value]
            else:
                data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            id_ = value
        elif name == "retry" and value.isascii() and value.isdigit():
            # Past Python's digit limit int() refuses it: ignored, as the SDK does.
            with _suppress(ValueError):
                retry = int(value)
    return _frame(raw, event, None if data is None else "\n".join(data), id_, retry)


def parse_frame(raw: bytes, *, stream_start: bool = True) -> SSEFrame:
    """Parse the fields of one raw frame (see the module docstring).

    ``stream_start`` says whether ``raw`` begins the stream, in which case a
    leading UTF-8 BOM is ignored. Empty lines anywhere in ``raw`` are skipped,
    so if ``raw`` holds several frames their fields are merged as if one.
    For every frame ``f`` at index ``i`` of a split stream,
    ``parse_frame(f.raw, stream_start=(i == 0)) == f``.
    """
    return _parse(bytes(raw), stream_start)


class SSESplitter:
    """Cut a byte stream into :class:`SSEFrame` s incrementally.

    Feed it the chunks as they arrive; call :meth:`flush` once at end of
    stream. After :meth:`flush` the splitter is back in its initial state and
    may be used for a new stream.

    Scanning uses ``bytes.find`` (or a small compiled regex once a ``"\\r"``
    has been seen) and resumes where the previous scan stopped, so a frame fed
    in many small pieces costs linear, not quadratic, time.
    """

    __slots__ = ("_at_start", "_bom_pending", "_buf", "_content", "_cr", "_scan")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._reset()

    def _reset(self) -> None:
        self._buf.clear()
        # True until enough bytes are seen to tell whether the stream starts with a BOM.
        self._bom_pending = True
        # True until the first frame is emitted (its parse ignores a leading BOM).
        self._at_start = True
        # Index in _buf of the first non-blank byte of the current frame, or -1.
        self._content = -1
        # Index in _buf where the next scan resumes.
        self._scan = 0
        # Whether a b"\r" has been seen in this stream (slow path needed).
        self._cr = False

    @property
    def pending(self) -> int:
        """Number of bytes buffered and not yet emitted in a frame."""
        return len(self._buf)

    def is_whole(self, chunk: bytes) -> bool:
        """True when ``chunk`` is exactly one whole frame and nothing is pending.

        Then ``feed(chunk)`` would return just ``[parse_frame(chunk,
        stream_start=False)]`` and leave the splitter as it is, so a caller
        that reads the frame's fields from ``chunk`` itself may skip ``feed``.
        """
        return (
            not self._buf
            and not self._bom_pending
            and not self._at_start
            and type(chunk) is bytes
            and 0 < len(chunk) - 2 == chunk.find(b"\n\n")
            and chunk[0] != _LF
            and b"\r" not in chunk
        )

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[SSEFrame]:
        """Add ``chunk``; return every frame it completed (possibly none)."""
        if not chunk:
            return []
        buf = self._buf
        if (
            not buf
            and type(chunk) is bytes
            and not self._bom_pending
            and 0 < len(chunk) - 2 == chunk.find(b"\n\n")
            and chunk[0] != _LF
            and b"\r" not in chunk
        ):
            # Fast path for a chunk that is exactly one frame (how servers
            # usually flush): nothing buffered and no CR, so the first blank
            # line is the first "\n\n", here at the very end, and the frame
            # starts with a non-blank line. The general loop below would cut
            # the same single frame and leave the same (empty) state.
            frame = _parse(chunk, self._at_start, True)
            self._at_start = False
            return [frame]
        old_len = len(buf)
        buf += chunk
        if not self._cr and buf.find(b"\r", old_len) >= 0:
            self._cr = True
        if self._bom_pending:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                return []  # could still be a BOM: nothing can be cut before it anyway
            self._bom_pending = False
            if buf.startswith(_BOM):
                self._scan = len(_BOM)

        frames: list[SSEFrame] = []
        n = len(buf)
        start = 0
        content = self._content
        scan = self._scan
        cr = self._cr
        with memoryview(buf) as view:
            while True:
                if content < 0:
                    # Skip leading blank lines: find the frame's first non-blank byte.
                    if scan < n and buf[scan] != _LF and buf[scan] != _CR:
                        content = scan
                    else:
                        m = _NOT_EOL.search(buf, scan)
                        if m is None:
                            scan = n
                            break
                        content = scan = m.start()
                if cr:
                    m = _BLANK_LINE.search(buf, scan)
                    p = -1 if m is None else m.start()
                else:
                    p = buf.find(b"\n\n", scan)
                if p < 0:
                    # Patterns are two bytes long: the last byte may start one.
                    scan = max(content, n - 1)
                    break
                q = p + 1  # the blank line's terminator starts here
                if buf[q] == _LF:
                    end = q + 1
                elif q + 1 < n:
                    end = q + 2 if buf[q + 1] == _LF else q + 1
                else:
                    scan = p  # "\r" at the end of the buffer: "\r" or "\r\n"?
                    break
                frames.append(_parse(bytes(view[start:end]), self._at_start))
                self._at_start = False
                start = scan = end
                content = -1
        if start:
            del buf[:start]
            scan -= start
            if content >= 0:
                content -= start
        self._scan = scan
        self._content = content
        return frames

    def flush(self) -> list[SSEFrame]:
        """End of stream: return the remaining bytes (if any) as one final frame."""
        if not self._buf:
            self._reset()
            return []
        frame = _parse(bytes(self._buf), self._at_start)
        self._reset()
        return [frame]


def split_sse(body: bytes) -> list[SSEFrame]:
    """Split a whole body: ``feed(body)`` then ``flush()``."""
    splitter = SSESplitter()
    frames = splitter.feed(body)
    frames.extend(splitter.flush())
    return frames

"""Import vercel/ai fixtures: ``*.chunks.txt`` streams and ``*.json`` bodies.

Guarantees:

* A chunks file (one SSE ``data:`` JSON object per line, framing dropped by
  vercel) becomes one session with one streamed exchange whose body is rebuilt
  as ``event: {type}\\ndata: {line}\\n\\n`` per non-empty line, in file order, so
  it has exactly one SSE frame per line. vercel re-serialised the JSON, so the
  body is marked ``"reserialized"``.
* A ``.json`` file (one non-streamed response or error body) is its own
  session, even beside a ``.chunks.txt`` of the same name: they are different
  recordings. Its body is the file's bytes exactly, marked ``"reserialized"``.
* vercel stores no request, status or headers: the exchange gets an honest
  stand-in (``POST /v1/responses``, empty request body marked
  ``"reserialized"``, status 200) and the session's metadata says
  ``request_known: False`` and ``status_known: False``.
* Malformed input raises :class:`ImportFormatError` naming the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from recorder.importers.detect import (
    ImportFormatError,
    decode_utf8,
    is_response_body,
    last_component,
    make_source,
    read_bytes,
    session_name,
)
from recorder.importers.model import RecordedExchange, RecordedSession

__all__ = ["RESPONSES_URL", "load"]

RESPONSES_URL: Final = "https://api.openai.com/v1/responses"
_CHUNKS_SUFFIX: Final = ".chunks.txt"
_UNKNOWN: Final[dict[str, Any]] = {"request_known": False, "status_known": False}


def load(path: Path) -> list[RecordedSession]:
    """Read a vercel ``.chunks.txt`` stream or ``.json`` body as one session."""
    data = read_bytes(path)
    text = decode_utf8(data, path)
    if not text.strip():
        raise ImportFormatError(f"{path.name}: the file is empty")
    try:
        whole: Any = json.loads(text)
    except (ValueError, RecursionError):
        whole = None
    # A chunks file of one line is itself a JSON object, but always with "type".
    if isinstance(whole, dict) and "type" not in whole:
        if not is_response_body(whole):
            problem = "a JSON object that is neither a Responses API body nor an error body"
            raise ImportFormatError(f"{path.name}: {problem}")
        return [_body_session(path, data)]
    return [_stream_session(path, text)]


def _stream_session(path: Path, text: str) -> RecordedSession:
    frames: list[bytes] = []
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = exc.msg
            raise ImportFormatError(f"{path.name}: line {number} is not JSON ({problem})") from None
        except RecursionError:
            raise ImportFormatError(f"{path.name}: line {number} is nested too deeply") from None
        except ValueError:  # an integer past Python's digit limit
            raise ImportFormatError(
                f"{path.name}: line {number} holds a number with too many digits"
            ) from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ImportFormatError(
                f"{path.name}: line {number} is not an SSE event object with a 'type'"
            )
        frames.append(f"event: {event['type']}\ndata: {line}\n\n".encode())
    exchange = RecordedExchange(
        method="POST",
        url=RESPONSES_URL,
        request_body=b"",
        request_fidelity="reserialized",
        status=200,
        response_headers=[("content-type", "text/event-stream")],
        response_body=b"".join(frames),
        streamed=True,
        fidelity="reserialized",
    )
    stem = last_component(path.name).removesuffix(_CHUNKS_SUFFIX)
    return RecordedSession(
        name=session_name(path, stem),
        exchanges=[exchange],
        labels={"source": "chunks"},
        metadata=dict(_UNKNOWN),
        source=make_source("chunks", path, [exchange]),
    )


def _body_session(path: Path, data: bytes) -> RecordedSession:
    exchange = RecordedExchange(
        method="POST",
        url=RESPONSES_URL,
        request_body=b"",
        request_fidelity="reserialized",
        status=200,
        response_headers=[("content-type", "application/json")],
        response_body=data,
        streamed=False,
        fidelity="reserialized",
    )
    # Keep ".json" in the name: a ".chunks.txt" of the same stem is another recording.
    return RecordedSession(
        name=session_name(path, last_component(path.name)),
        exchanges=[exchange],
        labels={"source": "chunks"},
        metadata=dict(_UNKNOWN),
        source=make_source("chunks", path, [exchange]),
    )

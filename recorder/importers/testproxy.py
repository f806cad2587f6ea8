"""Import Azure SDK test-proxy recordings (as openai-dotnet stores them).

Guarantees: one session per file and one exchange per entry of ``Entries``, in
order. A body the recording holds as text is reproduced byte for byte and
marked ``"wire"``:

* ``null`` is an empty body;
* a string is the body as UTF-8;
* an array of strings is a body the proxy split into pieces (an SSE stream
  as alternating ``event:``/``data:`` lines, a multipart upload as lines); the
  body is their concatenation, where a piece written ``b64:<base64>`` stands
  for the bytes it encodes (the proxy's way of keeping binary parts);

while a JSON value (an object, or an array under a JSON content type) was
parsed by the proxy, so it is re-encoded as compact JSON and marked
``"reserialized"``. Header values are strings or, for repeated headers, arrays
of strings: one ``(name, value)`` pair per value. Malformed input raises
:class:`ImportFormatError` naming the file and the entry.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any, Final

from recorder.importers.detect import (
    ImportFormatError,
    compact_json,
    decode_utf8,
    header_value,
    looks_like_sse,
    make_source,
    read_bytes,
    session_name,
)
from recorder.importers.model import Fidelity, RecordedExchange, RecordedSession

__all__ = ["load"]

_B64_PREFIX: Final = "b64:"
_RECORDS_DIR: Final = "SessionRecords"


def load(path: Path) -> list[RecordedSession]:
    """Read the test-proxy recording at ``path`` as one :class:`RecordedSession`."""
    text = decode_utf8(read_bytes(path), path)
    try:
        doc: Any = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        where = f" at line {line}" if line is not None else ""
        raise ImportFormatError(f"{path.name}: not valid JSON{where}") from None
    except RecursionError:
        raise ImportFormatError(f"{path.name}: JSON nested too deeply") from None
    if not isinstance(doc, dict) or "Entries" not in doc:
        raise ImportFormatError(f"{path.name}: not a test-proxy recording (no 'Entries')")
    entries = doc["Entries"]
    if not isinstance(entries, list):
        raise ImportFormatError(f"{path.name}: 'Entries' is not a list")
    if not entries:
        raise ImportFormatError(f"{path.name}: the recording holds no entries: nothing to import")

    exchanges = [_exchange(entry, path, i) for i, entry in enumerate(entries)]
    metadata: dict[str, Any] = {}
    variables = doc.get("Variables")
    if isinstance(variables, dict):
        # Names only: values are test settings that a redactor never looks at here.
        metadata["variables"] = sorted(str(k) for k in variables)
    return [
        RecordedSession(
            name=session_name(path, _stem(path)),
            exchanges=exchanges,
            labels={"source": "testproxy"},
            metadata=metadata,
            source=make_source("testproxy", path, exchanges),
        )
    ]


def _stem(path: Path) -> str:
    """``TestClass/TestName`` from ``...__SessionRecords__TestClass__TestName.json``."""
    parts = path.name.removesuffix(".json").split("__")
    if _RECORDS_DIR in parts:
        after = parts[parts.index(_RECORDS_DIR) + 1 :]
        if after:
            return "/".join(after)
    if len(parts) == 1 and path.parent.parent.name == _RECORDS_DIR:
        return f"{path.parent.name}/{parts[0]}"
    return "/".join(parts[-2:])


def _exchange(entry: Any, path: Path, index: int) -> RecordedExchange:
    where = f"entry {index}"
    if not isinstance(entry, dict):
        raise ImportFormatError(f"{path.name}: {where} is not an object")
    method = entry.get("RequestMethod")
    url = entry.get("RequestUri")
    status = entry.get("StatusCode")
    if not isinstance(method, str) or not method:
        raise ImportFormatError(f"{path.name}: {where} has no 'RequestMethod'")
    if not isinstance(url, str) or not url:
        raise ImportFormatError(f"{path.name}: {where} has no 'RequestUri'")
    if not isinstance(status, int) or isinstance(status, bool):
        raise ImportFormatError(f"{path.name}: {where} has no integer 'StatusCode'")

    request_headers = _headers(entry.get("RequestHeaders"), path, f"{where} RequestHeaders")
    response_headers = _headers(entry.get("ResponseHeaders"), path, f"{where} ResponseHeaders")
    request_body, request_fidelity = _body(
        entry.get("RequestBody"), request_headers, path, f"{where} RequestBody"
    )
    response_body, fidelity = _body(
        entry.get("ResponseBody"), response_headers, path, f"{where} ResponseBody"
    )
    streamed = fidelity == "wire" and looks_like_sse(
        header_value(response_headers, "content-type"), response_body
    )
    return RecordedExchange(
        method=method.upper(),
        url=url,
        request_headers=request_headers,
        request_body=request_body,
        request_fidelity=request_fidelity,
        status=status,
        response_headers=response_headers,
        response_body=response_body,
        streamed=streamed,
        fidelity=fidelity,
    )


def _headers(raw: Any, path: Path, where: str) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ImportFormatError(f"{path.name}: {where} is not an object")
    pairs: list[tuple[str, str]] = []
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        for one in values:
            if not isinstance(one, str):
                raise ImportFormatError(f"{path.name}: {where} {name!r} is not a string")
            pairs.append((name, one))
    return pairs


def _is_json_type(headers: list[tuple[str, str]]) -> bool:
    content_type = header_value(headers, "content-type") or ""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _body(
    raw: Any, headers: list[tuple[str, str]], path: Path, where: str
) -> tuple[bytes, Fidelity]:
    if raw is None:
        return b"", "wire"
    if isinstance(raw, str):
        return _utf8(raw, path, where), "wire"
    if isinstance(raw, list) and not _is_json_type(headers):
        if not all(isinstance(piece, str) for piece in raw):
            raise ImportFormatError(f"{path.name}: {where} is an array holding non-strings")
        return b"".join(_piece(piece, path, where) for piece in raw), "wire"
    return compact_json(raw, path, where), "reserialized"


def _piece(piece: str, path: Path, where: str) -> bytes:
    if piece.startswith(_B64_PREFIX):
        try:
            return base64.b64decode(piece[len(_B64_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ImportFormatError(f"{path.name}: {where} has a bad 'b64:' piece") from None
    return _utf8(piece, path, where)


def _utf8(text: str, path: Path, where: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ImportFormatError(f"{path.name}: {where} holds a lone surrogate") from None

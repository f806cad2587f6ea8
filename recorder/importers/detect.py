"""Tell a recording's format from its content, and load any importable one.

Guarantees:

* :func:`detect_format` decides by content, never by file name: it reads the
  first line and the first few KB and answers one of ``"tape"`` (a
  zstd-compressed file is a tape), ``"vcr"``, ``"chunks"`` or
  ``"testproxy"``, or raises :class:`ImportFormatError`.
* :func:`load_any` returns the sessions of a VCR cassette, a vercel chunks (or
  body) file or a test-proxy recording; every failure on bad input is an
  :class:`ImportFormatError` whose message is one line naming the file.

The small helpers shared by the importers (naming, ``source``, compact JSON)
live here too, because every importer already depends on this module for the
error type.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, Literal

from recorder.errors import CodetapeError
from recorder.importers.model import Fidelity, RecordedExchange, RecordedSession
from recorder.tape import empty_tape

__all__ = [
    "FORMATS",
    "Format",
    "ImportFormatError",
    "detect_format",
    "load_any",
]

Format = Literal["tape", "vcr", "chunks", "testproxy"]
FORMATS: Final[tuple[str, ...]] = ("tape", "vcr", "chunks", "testproxy")
_IMPORTABLE: Final[tuple[str, ...]] = ("vcr", "chunks", "testproxy")

_HEAD_BYTES: Final = 4096
_FIRST_LINE_LIMIT: Final = 16 * 1024 * 1024
_FULL_PARSE_LIMIT: Final = 64 * 1024 * 1024
_BOM: Final = b"\xef\xbb\xbf"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"

_REPO_DIR = re.compile(r"^(?P<owner>[A-Za-z0-9][A-Za-z0-9-]*)__(?P<repo>[A-Za-z0-9._-]+)$")
_TESTPROXY_HEAD = re.compile(r'^\{\s*"Entries"\s*:\s*\[')
_RESPONSE_HEAD = re.compile(r'"object"\s*:\s*"response"')
_ERROR_HEAD = re.compile(r'^\{\s*"error"\s*:\s*\{')
_VCR_HEAD = re.compile(r"^interactions:", re.MULTILINE)


class ImportFormatError(CodetapeError, ValueError):
    """A file is not in the expected format; the message is one human line."""


def detect_format(path: Path) -> Format:
    """Return the format of the recording at ``path``, judged by its content."""
    try:
        with path.open("rb") as f:
            first = f.readline(_FIRST_LINE_LIMIT)
            f.seek(0)
            head = f.read(_HEAD_BYTES)
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if head.startswith(_ZSTD_MAGIC):
        return "tape"  # only tapes are written compressed
    first = first.removeprefix(_BOM).strip()
    head = head.removeprefix(_BOM)
    if not head.strip():
        raise ImportFormatError(empty_tape(path))  # the line every tape reader gives

    if first.startswith(b"{"):
        try:
            obj = json.loads(first)
        except (ValueError, UnicodeDecodeError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            found = _classify_json_object(obj, one_line=True)
            if found is not None:
                return found

    text = head.decode("utf-8", errors="replace").lstrip()
    if text.startswith("{"):
        if _TESTPROXY_HEAD.match(text):
            return "testproxy"
        # A test-proxy file whose first key is not "Entries" may still quote a
        # response body near its top: let the full parse below decide those.
        if '"Entries"' not in text and (_RESPONSE_HEAD.search(text) or _ERROR_HEAD.match(text)):
            return "chunks"
        whole = _parse_whole_json(path)
        if isinstance(whole, dict):
            found = _classify_json_object(whole, one_line=False)
            if found is not None:
                return found
        raise ImportFormatError(
            f"cannot tell the format of {path.name}: a JSON document that is neither a "
            "test-proxy recording (no 'Entries') nor a Responses API body"
        )
    if _VCR_HEAD.search(text):
        return "vcr"
    raise ImportFormatError(
        f"cannot tell the format of {path.name}: not a codetape tape, a VCR cassette "
        "(no top-level 'interactions'), a test-proxy recording or a vercel chunks file"
    )


def load_any(path: Path, fmt: str = "auto") -> list[RecordedSession]:
    """Load the sessions of ``path`` with the importer for ``fmt`` (or the detected one)."""
    from recorder.importers import chunks, testproxy, vcr

    chosen: str = detect_format(path) if fmt == "auto" else fmt
    if chosen == "tape":
        raise ImportFormatError(
            f"{path.name} is already a codetape tape, not a recording to import"
        )
    if chosen == "vcr":
        return vcr.load(path)
    if chosen == "chunks":
        return chunks.load(path)
    if chosen == "testproxy":
        return testproxy.load(path)
    raise ImportFormatError(
        f"unknown import format {fmt!r} for {path.name}: use one of auto, {', '.join(_IMPORTABLE)}"
    )


def _classify_json_object(obj: dict[str, Any], *, one_line: bool) -> Format | None:
    if one_line and ("kind" in obj or "codetape" in obj):
        return "tape"
    if isinstance(obj.get("Entries"), list):
        return "testproxy"
    if one_line and isinstance(obj.get("type"), str):
        return "chunks"
    if is_response_body(obj):
        return "chunks"
    return None


def is_response_body(obj: dict[str, Any]) -> bool:
    """True for a non-streamed Responses API body or an OpenAI error body."""
    if obj.get("object") == "response":
        return True
    return "type" not in obj and isinstance(obj.get("error"), dict)


def _parse_whole_json(path: Path) -> Any:
    try:
        if path.stat().st_size > _FULL_PARSE_LIMIT:
            return None
        return json.loads(path.read_bytes().removeprefix(_BOM))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None


# ---------------------------------------------------------------- shared helpers


def read_bytes(path: Path) -> bytes:
    """The file's bytes, or an :class:`ImportFormatError` saying why not."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path.name}: {exc.strerror or exc}") from None


def decode_utf8(data: bytes, path: Path) -> str:
    """``data`` as text (a leading BOM dropped), or an :class:`ImportFormatError`."""
    try:
        return data.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(
            f"{path.name}: not UTF-8 text (bad byte at offset {exc.start})"
        ) from None


def compact_json(value: Any, path: Path, where: str) -> bytes:
    """``value`` re-encoded as compact UTF-8 JSON (the source had parsed it)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ImportFormatError(f"{path.name}: {where} is not JSON data ({exc})") from None
    except RecursionError:
        raise ImportFormatError(f"{path.name}: {where} is nested too deeply") from None
    return text.encode("utf-8")


def repo_of(path: Path) -> tuple[str, str] | None:
    """``(owner, repo)`` when the file lies in a directory named ``<owner>__<repo>``."""
    m = _REPO_DIR.match(path.resolve().parent.name)
    return (m["owner"], m["repo"]) if m else None


def session_name(path: Path, stem: str) -> str:
    """A readable session name: ``<project>/<stem>``, or ``stem`` outside a repo dir."""
    repo = repo_of(path)
    if repo is None:
        return stem
    owner, name = repo
    project = name if name.lower().startswith(owner.lower()) else f"{owner}-{name}"
    return f"{project}/{stem}"


def last_component(file_name: str) -> str:
    """The original file name of a ``dir__dir__file`` realdata name (or the name itself)."""
    return file_name.rsplit("__", 1)[-1]


def make_source(fmt: str, path: Path, exchanges: Iterable[RecordedExchange]) -> dict[str, Any]:
    """The ``source`` dict of a session: format, file name, fidelity, and repo if known."""
    fidelity: Fidelity = "wire" if all(x.fidelity == "wire" for x in exchanges) else "reserialized"
    source: dict[str, Any] = {"format": fmt, "path": path.name, "fidelity": fidelity}
    repo = repo_of(path)
    if repo is not None:
        source["repo"] = f"{repo[0]}/{repo[1]}"
    return source


def looks_like_sse(content_type: str | None, body: bytes) -> bool:
    """True when a response body is an SSE stream (by content type or by its start)."""
    if content_type is not None and content_type.split(";", 1)[0].strip().lower() == (
        "text/event-stream"
    ):
        return True
    return body.startswith((b"event:", b"data:"))


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), if any."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None

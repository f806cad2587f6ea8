"""Import VCR.py YAML cassettes (as pydantic-ai records them).

Guarantees: one session per cassette and one exchange per interaction, in the
cassette's order. A body the cassette holds as a string (``body.string``, a
YAML literal block for SSE) is reproduced byte for byte as UTF-8 and marked
``"wire"``; a body it holds as ``parsed_body`` (JSON parsed, keys sorted) is
re-encoded as compact JSON and marked ``"reserialized"``. Header values, which
VCR stores as lists, become one ``(name, value)`` pair per value. Anything
malformed raises :class:`ImportFormatError` naming the file and the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from recorder.importers.detect import (
    ImportFormatError,
    compact_json,
    decode_utf8,
    header_value,
    last_component,
    looks_like_sse,
    make_source,
    read_bytes,
    session_name,
)
from recorder.importers.model import Fidelity, RecordedExchange, RecordedSession

__all__ = ["load"]

_SUFFIXES = (".yaml", ".yml")
# libyaml when present: cassettes holding base64 images run to megabytes.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(path: Path) -> list[RecordedSession]:
    """Read the cassette at ``path`` as one :class:`RecordedSession`."""
    text = decode_utf8(read_bytes(path), path)
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ImportFormatError(f"{path.name}: not valid YAML{where}: {problem}") from None
    except (ValueError, RecursionError):  # an integer past Python's digit limit, say
        raise ImportFormatError(f"{path.name}: YAML holding a value that cannot be read") from None
    if not isinstance(doc, dict) or "interactions" not in doc:
        raise ImportFormatError(f"{path.name}: not a VCR cassette (no top-level 'interactions')")
    interactions = doc["interactions"]
    if not isinstance(interactions, list):
        raise ImportFormatError(f"{path.name}: 'interactions' is not a list")
    if _is_go_vcr(doc, interactions):
        raise ImportFormatError(
            f"{path.name} is a go-vcr cassette (version {doc.get('version', '?')}): go-vcr "
            "cassettes are not supported; codetape imports VCR.py cassettes, vercel chunks "
            "files and test-proxy recordings"
        )
    if not interactions:
        raise ImportFormatError(
            f"{path.name}: the cassette holds no interactions: nothing to import"
        )

    exchanges = [_exchange(item, path, i) for i, item in enumerate(interactions)]
    stem = last_component(path.name)
    for suffix in _SUFFIXES:
        stem = stem.removesuffix(suffix)
    metadata: dict[str, Any] = {}
    if "version" in doc:
        metadata["vcr_version"] = doc["version"]
    return [
        RecordedSession(
            name=session_name(path, stem),
            exchanges=exchanges,
            labels={"source": "vcr"},
            metadata=metadata,
            source=make_source("vcr", path, exchanges),
        )
    ]


def _is_go_vcr(doc: dict[str, Any], interactions: list[Any]) -> bool:
    """go-vcr (Go) writes ``request.url`` and ``response.code``; VCR.py ``uri`` and ``status``.

    Both say ``version: 1`` in their first formats, so the shape decides;
    ``version: 2`` and later are go-vcr's alone.
    """
    version = doc.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version >= 2:
        return True
    first = interactions[0] if interactions else None
    request = first.get("request") if isinstance(first, dict) else None
    return isinstance(request, dict) and "url" in request and "uri" not in request


def _exchange(item: Any, path: Path, index: int) -> RecordedExchange:
    where = f"interaction {index}"
    if not isinstance(item, dict):
        raise ImportFormatError(f"{path.name}: {where} is not a mapping")
    request = _mapping(item, "request", path, where)
    response = _mapping(item, "response", path, where)

    method = _string(request, "method", path, f"{where} request")
    url = _string(request, "uri", path, f"{where} request")
    request_headers = _headers(request.get("headers"), path, f"{where} request")
    request_body, request_fidelity = _body(request, path, f"{where} request")

    status_field = response.get("status")
    if isinstance(status_field, dict) and isinstance(status_field.get("code"), int):
        status: int = status_field["code"]
    else:
        raise ImportFormatError(f"{path.name}: {where} response has no 'status.code'")
    response_headers = _headers(response.get("headers"), path, f"{where} response")
    response_body, fidelity = _body(response, path, f"{where} response")
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


def _mapping(parent: dict[str, Any], key: str, path: Path, where: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise ImportFormatError(f"{path.name}: {where} has no '{key}' mapping")
    return value


def _string(parent: dict[str, Any], key: str, path: Path, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise ImportFormatError(f"{path.name}: {where} has no '{key}'")
    return value


def _headers(raw: Any, path: Path, where: str) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ImportFormatError(f"{path.name}: {where} headers are not a mapping")
    pairs: list[tuple[str, str]] = []
    for name, values in raw.items():
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ImportFormatError(f"{path.name}: {where} header {name!r} has a bad value")
            pairs.append((str(name), str(value)))
    return pairs


def _body(part: dict[str, Any], path: Path, where: str) -> tuple[bytes, Fidelity]:
    """The body of a request or response and whether it is the wire's own bytes."""
    if "parsed_body" in part:
        return compact_json(part["parsed_body"], path, f"{where} parsed_body"), "reserialized"
    body = part.get("body")
    # VCR.py writes a request body bare and a response body as {"string": ...}.
    if isinstance(body, dict):
        if "string" not in body:
            raise ImportFormatError(f"{path.name}: {where} body has no 'string'")
        body = body["string"]
    if body is None:
        return b"", "wire"
    if isinstance(body, bytes):  # a YAML !!binary body
        return body, "wire"
    if isinstance(body, str):
        try:
            return body.encode("utf-8"), "wire"
        except UnicodeEncodeError:
            raise ImportFormatError(
                f"{path.name}: {where} body holds a lone surrogate, not encodable text"
            ) from None
    raise ImportFormatError(f"{path.name}: {where} body is neither text nor bytes")

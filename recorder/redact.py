"""Redaction of secrets before anything is stored.

Guarantees: header values whose names are in the redaction set (case-insensitive)
are replaced by :data:`REDACTED` before an event is built, query parameters
named like keys are too, and JSON body paths the user adds are replaced in
request bodies. Nothing this module is given is stored unredacted by the
callers (capture, importers, proxy), which all go through :class:`Redactor`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["DEFAULT_HEADERS", "DEFAULT_QUERY_PARAMS", "REDACTED", "Redactor"]

REDACTED = "<redacted>"

DEFAULT_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "openai-organization",
        "openai-project",
        "cookie",
        "set-cookie",
    }
)
DEFAULT_QUERY_PARAMS = frozenset({"api-key", "api_key", "key", "access_token"})


@dataclass(frozen=True, slots=True)
class Redactor:
    """What to scrub. Extra header names and JSON paths add to the defaults."""

    headers: frozenset[str] = DEFAULT_HEADERS
    query_params: frozenset[str] = DEFAULT_QUERY_PARAMS
    json_paths: tuple[tuple[str, ...], ...] = field(default_factory=tuple)

    @classmethod
    def with_extra(cls, headers: Iterable[str] = (), json_paths: Iterable[str] = ()) -> Redactor:
        """Defaults plus ``headers`` and dotted ``json_paths`` such as ``"metadata.user"``."""
        return cls(
            headers=DEFAULT_HEADERS | {h.lower() for h in headers},
            json_paths=tuple(tuple(p.split(".")) for p in json_paths),
        )

    def header_pairs(self, pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
        """Headers as ``[name, value]`` lists (JSON-friendly), secrets replaced."""
        return [
            [name, REDACTED if name.lower() in self.headers else value] for name, value in pairs
        ]

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        if not parts.query:
            return url
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if not any(k.lower() in self.query_params for k, _ in pairs):
            return url
        query = urlencode(
            [(k, REDACTED if k.lower() in self.query_params else v) for k, v in pairs]
        )
        return urlunsplit(parts._replace(query=query))

    def body(self, body: bytes) -> tuple[bytes, list[str]]:
        """``body`` with the configured JSON paths replaced, and the paths that were.

        The bytes are left exactly as they were unless a path matched: only then
        is the JSON re-serialised.
        """
        if not self.json_paths or not body.lstrip().startswith(b"{"):
            return body, []
        try:
            document = json.loads(body)
        except ValueError:
            return body, []
        hits = [".".join(p) for p in self.json_paths if _replace_path(document, p)]
        if not hits:
            return body, []
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode(), hits


def _replace_path(document: Any, path: Sequence[str]) -> bool:
    node = document
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    if isinstance(node, dict) and path[-1] in node:
        node[path[-1]] = REDACTED
        return True
    return False

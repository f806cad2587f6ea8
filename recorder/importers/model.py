"""The neutral picture of a recording that every importer produces.

Guarantees: ``response_body`` holds the body exactly as the source holds it
(for an SSE stream, the concatenation of its frames); ``fidelity`` says
whether those bytes are the wire's own ("wire") or were re-serialised by the
source tool ("reserialized"), so nobody mistakes one for the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Fidelity = Literal["wire", "reserialized"]

__all__ = ["Fidelity", "RecordedExchange", "RecordedSession"]


@dataclass(slots=True)
class RecordedExchange:
    """One HTTP request and its response, as a source recorded it."""

    method: str
    url: str
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    request_body: bytes = b""
    request_fidelity: Fidelity = "wire"
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""
    streamed: bool = False
    """True when the body is an SSE stream, to be stored one frame per event."""
    fidelity: Fidelity = "wire"
    """Fidelity of the response body."""


@dataclass(slots=True)
class RecordedSession:
    """A named group of exchanges from one source file."""

    name: str
    exchanges: list[RecordedExchange]
    labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    """format, path, repo, license, fidelity: where this came from."""

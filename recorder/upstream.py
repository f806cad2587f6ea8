"""Where the recording proxy may send a request: the configured upstream, and nowhere else.

Guarantees:

* :func:`parse_upstream` accepts only an ``http`` or ``https`` URL with a host,
  no user info, no query and no fragment; its scheme, host and port are fixed
  for the proxy's life.
* :func:`upstream_url` builds each request's URL from those parts plus the
  client's *path and query only*. A request target that is not an
  origin-form path (``@host/...``, ``//host/...``, an absolute URL, ``*``, a
  backslash, control characters, or ``.``/``..`` segments, percent-encoded or
  not) is refused with :class:`BadTarget`, so no client can steer the proxy,
  and the API key it forwards, to another host or out of the upstream's base
  path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httpx2

from recorder.errors import CodetapeError
from recorder.redact import Redactor

__all__ = ["BadTarget", "Upstream", "parse_upstream", "upstream_url"]

# Methods a reverse proxy in front of an HTTP API has no business relaying:
# CONNECT opens a tunnel to a host of the client's choosing; TRACE echoes the
# request (and its credentials) back.
_REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})
# Bytes that never belong in an origin-form target (RFC 9112 §3.2.1): controls,
# space, non-ASCII (a target is ASCII; others arrive percent-encoded), backslash
# (some servers treat it as "/"), "#" (a fragment is not sent).
_BAD_BYTES = re.compile(rb"[\x00-\x20\x7f-\xff\\#]")


class BadTarget(CodetapeError):
    """A request the proxy refuses to forward (answered 400 or 405, never sent upstream)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Upstream:
    """The fixed parts of every forwarded URL."""

    scheme: str
    host: str
    port: int | None
    base_path: bytes  # "" or "/prefix", never ending in "/"

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}{port}{self.base_path.decode('ascii')}"


def _shown(url: str) -> str:
    """``url`` as an error message may print it: without user info or secret query values."""
    return Redactor().url(url)


def parse_upstream(url: str) -> Upstream:
    """The upstream at ``url``; :class:`CodetapeError` naming what is wrong with it."""
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as exc:
        raise CodetapeError(f"--upstream {_shown(url)!r} is not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CodetapeError(
            f"--upstream must be an http:// or https:// URL with a host, not {_shown(url)!r}"
        )
    if parsed.userinfo:
        raise CodetapeError("--upstream must not carry a user name or password")
    if parsed.query or parsed.fragment:
        raise CodetapeError(f"--upstream must not have a query or fragment: {_shown(url)!r}")
    base = parsed.raw_path.rstrip(b"/")
    _check_segments(base)
    return Upstream(parsed.scheme, parsed.host, parsed.port, base)


def upstream_url(upstream: Upstream, method: str, raw_target: bytes, query: bytes) -> httpx2.URL:
    """The URL to forward a request for ``raw_target`` (path) and ``query`` to.

    Raises :class:`BadTarget` unless the target is a plain origin-form path.
    """
    if method.upper() in _REFUSED_METHODS:
        raise BadTarget(f"method {method} is not forwarded by this proxy", status=405)
    if not raw_target.startswith(b"/") or raw_target.startswith(b"//"):
        shown = raw_target[:80].decode("latin-1")
        raise BadTarget(f"request target must be a path starting with a single '/': {shown!r}")
    if _BAD_BYTES.search(raw_target) or _BAD_BYTES.search(query):
        raise BadTarget("request target holds a character not allowed in a URL path")
    _check_segments(raw_target)
    raw_path = upstream.base_path + raw_target
    if query:
        raw_path += b"?" + query
    url = httpx2.URL(
        scheme=upstream.scheme, host=upstream.host, port=upstream.port, raw_path=raw_path
    )
    # Belt and braces: whatever the path holds, the authority is the upstream's.
    if url.host != upstream.host or url.port != upstream.port or url.scheme != upstream.scheme:
        raise BadTarget("request target would leave the upstream")
    return url


def _check_segments(raw_path: bytes) -> None:
    # Percent-decoded first (and twice, for "%252e"), so "/%2e%2e/" and
    # "/..%2f" are caught as well as "/../": an upstream that normalises the
    # path must not be walked out of its base path.
    decoded = unquote_to_bytes(unquote_to_bytes(raw_path))
    for segment in re.split(rb"[/\\]", decoded):
        if segment in (b".", b".."):
            raise BadTarget("request target must not hold '.' or '..' path segments")

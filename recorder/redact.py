"""Redaction of secrets before anything is stored.

Guarantees (every caller, capture, the proxy and the importers, goes through
:class:`Redactor` before an event exists):

* **Headers.** A header's value is replaced by :data:`REDACTED` when its name
  (case-insensitive, surrounding blanks ignored) is in :data:`DEFAULT_HEADERS`
  or the user's extra names, or when the name holds one of
  :data:`SECRET_WORDS` (``x-goog-api-key``, ``x-auth-token``, ``set-cookie``,
  ``x-client-cert``...), unless the name is allow-listed (:data:`DEFAULT_KEEP`:
  rate-limit token counts and ``idempotency-key``, plus the user's ``keep``).
  The allow-list never beats the explicit names. Whatever the name, a value
  that looks like a credential (:func:`looks_like_credential`: it starts with
  ``Bearer `` or ``Basic ``, or holds an OpenAI-style ``sk-...`` key) is
  replaced too, allow-list or not.
* **URLs.** User info (``https://user:password@host``) is removed; a query
  parameter (parameters are separated by ``&`` or ``;``) whose name is in
  :data:`DEFAULT_QUERY_PARAMS` or holds one of :data:`SECRET_QUERY_WORDS`
  (``token=``, ``sig=``, ``X-Amz-Signature=``...), or whose value holds an
  ``sk-...`` key (:func:`holds_api_key`), has its value replaced; a parameter
  whose name itself holds such a key is replaced whole. Every other byte of
  the URL is kept.
* **Settings.** A string a user gives that ends up in session metadata (an
  endpoint URL, a label) passes through :meth:`Redactor.setting`: a URL is
  redacted as above, a credential-looking value is replaced.
* Value-based detection looks at header values, query parameters and
  settings only, once per request or response head: never at SSE frames or
  bodies, whose secrets are named by JSON path.
* **JSON paths** (``"metadata.user_key"``; ``*`` matches any key or list
  item, a number a list index) are replaced in request bodies, and in the
  response object the API echoes them back in: the ``response`` of the
  lifecycle SSE events (:data:`ECHO_TYPES`) and plain JSON bodies (the object
  itself, and each item of a list object's ``data``). Only the values at the
  paths change: every other byte is kept, so the JSON stays valid (and a frame
  cut off mid-JSON stays cut off where it was), and an SSE frame keeps its
  framing, so the client parses a redacted frame as it parsed the original.
* Every method says what it replaced, so events can record which stored bytes
  are no longer the wire's own.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus

__all__ = [
    "DEFAULT_HEADERS",
    "DEFAULT_KEEP",
    "DEFAULT_QUERY_PARAMS",
    "ECHO_TYPES",
    "REDACTED",
    "SECRET_QUERY_WORDS",
    "SECRET_WORDS",
    "Redactor",
    "holds_api_key",
    "looks_like_credential",
    "parse_path",
    "query_pairs",
]

REDACTED = "<redacted>"
_REDACTED_JSON: Final = json.dumps(REDACTED)
_REDACTED_QUERY: Final = "%3Credacted%3E"

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
"""Always redacted, whatever the allow-list says."""
DEFAULT_QUERY_PARAMS = frozenset({"api-key", "api_key", "key", "access_token"})
SECRET_WORDS: Final = (
    "key",
    "token",
    "secret",
    "signature",
    "password",
    "passwd",
    "auth",
    "session",
    "cookie",
    "credential",
    "bearer",
    # Client certificates forwarded by a TLS-terminating proxy (X-Client-Cert,
    # X-Forwarded-Client-Cert, SSL-Client-Cert) vouch for the client's identity.
    "cert",
)
"""A header or query parameter whose name holds one of these is a secret."""
SECRET_QUERY_WORDS: Final = (*SECRET_WORDS, "sig", "pwd")
"""Query parameters also say ``sig`` (Azure SAS) and ``pwd``."""
DEFAULT_KEEP = frozenset(
    {
        # Counts of model tokens, not credentials: cost and rate-limit reports read them.
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        # A random per-request id the SDK sends so retries are not applied twice.
        "idempotency-key",
    }
)
"""Names whose words look secret but whose values are not."""
ECHO_TYPES = frozenset(
    {
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
        "response.queued",
    }
)
"""SSE events whose ``response`` object echoes the request (metadata, instructions, tools...)."""

_HEADER_WORDS: Final = re.compile("|".join(SECRET_WORDS))
_QUERY_WORDS: Final = re.compile("|".join(SECRET_QUERY_WORDS))
# An HTTP authentication scheme that carries the credential itself.
_AUTH_SCHEME: Final = re.compile(r"[ \t]*(?:bearer|basic)[ \t]", re.IGNORECASE)
# An OpenAI-style key: "sk-" then a long token ("sk-proj-...", "sk-svcacct-...",
# "sk-admin-...", the older "sk-" + 48 characters). 12 characters at least, so
# that words ending in "sk-" ("task-1", "risk-free") and short placeholders are
# not taken for keys; not preceded by a letter or digit for the same reason.
_API_KEY: Final = re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{12,}")
# Query parameters are separated by "&", and by ";" in the older HTML 4 form
# that many servers still accept: either may end a secret value.
_QUERY_SEPARATOR: Final = re.compile(r"([&;])")


def holds_api_key(text: str) -> bool:
    """Whether ``text`` holds an OpenAI-style ``sk-...`` key anywhere."""
    # The substring test first: almost no value holds "sk-" at all.
    return "sk-" in text and _API_KEY.search(text) is not None


def looks_like_credential(value: str) -> bool:
    """Whether a header value is a credential whatever its name says: it starts with
    ``Bearer `` or ``Basic `` (any case), or holds an ``sk-...`` key."""
    return _AUTH_SCHEME.match(value) is not None or holds_api_key(value)


def query_pairs(query: str) -> list[tuple[str, str]]:
    """A query's (name, value) pairs, decoded, split at ``&`` and ``;`` as redaction splits it.

    Replay matches queries split this way, so that a value redacted after a
    ``;`` is left out of matching like any other.
    """
    return [
        pair
        for piece in _QUERY_SEPARATOR.split(query)[::2]
        for pair in parse_qsl(piece, keep_blank_values=True)
    ]


Path = tuple[str, ...]


def parse_path(dotted: str) -> Path:
    """``"metadata.user"`` as ``("metadata", "user")``."""
    return tuple(dotted.split("."))


@dataclass(frozen=True, slots=True)
class Redactor:
    """What to scrub: the defaults, plus what the user adds or keeps (see the module docstring)."""

    headers: frozenset[str] = DEFAULT_HEADERS
    """Header names (lower case) always redacted."""
    query_params: frozenset[str] = DEFAULT_QUERY_PARAMS
    """Query parameter names (lower case) always redacted."""
    json_paths: tuple[Path, ...] = ()
    """Request body paths, redacted in the request and in the response objects echoing it."""
    keep: frozenset[str] = DEFAULT_KEEP
    """Header and query parameter names (lower case) the secret-word rule leaves alone."""

    @classmethod
    def with_extra(
        cls,
        headers: Iterable[str] = (),
        json_paths: Iterable[str] = (),
        *,
        query_params: Iterable[str] = (),
        keep: Iterable[str] = (),
    ) -> Redactor:
        """The defaults plus ``headers``, ``query_params`` and dotted ``json_paths``
        (such as ``"metadata.user"``) to redact, and names to ``keep`` although
        they look secret."""
        return cls(
            headers=DEFAULT_HEADERS | {h.lower() for h in headers},
            query_params=DEFAULT_QUERY_PARAMS | {q.lower() for q in query_params},
            json_paths=tuple(parse_path(p) for p in json_paths),
            keep=DEFAULT_KEEP | {k.lower() for k in keep},
        )

    def to_config(self) -> dict[str, list[str]]:
        """Plain lists (for a pipe or JSON); :meth:`from_config` gives this redactor back."""
        return {
            "headers": sorted(self.headers),
            "query_params": sorted(self.query_params),
            "json_paths": [".".join(p) for p in self.json_paths],
            "keep": sorted(self.keep),
        }

    @classmethod
    def from_config(cls, config: dict[str, list[str]]) -> Redactor:
        return cls(
            headers=frozenset(config["headers"]),
            query_params=frozenset(config["query_params"]),
            json_paths=tuple(parse_path(p) for p in config["json_paths"]),
            keep=frozenset(config["keep"]),
        )

    # -- headers -------------------------------------------------------------

    def secret_header(self, name: str) -> bool:
        """Whether the header ``name`` is a secret by its name (for values, see
        :func:`looks_like_credential`)."""
        # Blanks around a name are no part of it for an HTTP server either.
        lowered = name.strip().lower()
        if lowered in self.headers:
            return True
        return lowered not in self.keep and _HEADER_WORDS.search(lowered) is not None

    def header_pairs(self, pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
        """Headers as ``[name, value]`` lists (JSON-friendly), secrets replaced."""
        return self.headers_redacted(pairs)[0]

    def headers_redacted(
        self, pairs: Iterable[tuple[str, str]]
    ) -> tuple[list[list[str]], list[str]]:
        """:meth:`header_pairs`, and the (lower-case) names whose values were replaced."""
        out: list[list[str]] = []
        names: list[str] = []
        for name, value in pairs:
            if self.secret_header(name) or looks_like_credential(value):
                out.append([name, REDACTED])
                if name.lower() not in names:
                    names.append(name.lower())
            else:
                out.append([name, value])
        return out, names

    # -- URLs ----------------------------------------------------------------

    def secret_query_param(self, name: str) -> bool:
        """Whether the query parameter ``name`` is a secret by its name."""
        lowered = name.lower()
        if lowered in self.query_params:
            return True
        return lowered not in self.keep and _QUERY_WORDS.search(lowered) is not None

    def url(self, url: str) -> str:
        """``url`` without user info and with secret query values replaced."""
        return self.url_redacted(url)[0]

    def url_redacted(self, url: str) -> tuple[str, list[str], bool]:
        """(:meth:`url`, the query parameters replaced, whether user info was removed)."""
        url, userinfo = _strip_userinfo(url)
        head, mark, rest = url.partition("?")
        if not mark:
            return url, [], userinfo
        query, hash_mark, fragment = rest.partition("#")
        replaced: list[str] = []
        # Separators at the odd indices, kept as they were.
        pieces = _QUERY_SEPARATOR.split(query)
        for index in range(0, len(pieces), 2):
            pair = pieces[index]
            raw_name, _, raw_value = pair.partition("=")
            name = unquote_plus(raw_name)
            if holds_api_key(name):
                # The key is the name ("?sk-..."): nothing of it may stay.
                pieces[index], name = _REDACTED_QUERY, REDACTED
            elif name and (self.secret_query_param(name) or holds_api_key(unquote_plus(raw_value))):
                pieces[index] = f"{raw_name}={_REDACTED_QUERY}"
            else:
                continue
            if name not in replaced:
                replaced.append(name)
        if not replaced:
            return url, [], userinfo
        return f"{head}?{''.join(pieces)}{hash_mark}{fragment}", replaced, userinfo

    # -- settings ------------------------------------------------------------

    def setting(self, value: str) -> str:
        """A user-given string bound for session metadata, redacted.

        An endpoint URL (``--upstream``, ``$OPENAI_BASE_URL``) goes through
        :meth:`url`, as request URLs do; a value that looks like a credential
        (:func:`looks_like_credential`) is replaced whole.
        """
        if looks_like_credential(value):
            return REDACTED
        if "://" in value:
            return self.url(value)
        return value

    def settings(self, value: Any) -> Any:
        """A JSON value (session metadata, labels) with each string passed through
        :meth:`setting`; keys are kept. The same object when nothing changed."""
        if isinstance(value, str):
            return self.setting(value)
        if isinstance(value, dict):
            items = {k: self.settings(v) for k, v in value.items()}
            return value if items == value else items
        if isinstance(value, list | tuple):
            listed = [self.settings(v) for v in value]
            return value if listed == list(value) else listed
        return value

    # -- JSON ----------------------------------------------------------------

    def body(self, body: bytes) -> tuple[bytes, list[str]]:
        """A request body with the configured JSON paths replaced, and the paths that were."""
        if not self.json_paths or not _looks_like_object(body):
            return body, []
        return _redact_json_bytes(body, [(p, [p]) for p in self.json_paths])

    def response_body(self, body: bytes) -> tuple[bytes, list[str]]:
        """A plain JSON response body with the paths its object echoes replaced.

        The paths apply to the object itself (a response, a conversation) and to
        each item of a list object's ``data``.
        """
        if not self.json_paths or not _looks_like_object(body):
            return body, []
        return _redact_json_bytes(body, [(p, [p, ("data", "*", *p)]) for p in self.json_paths])

    def holds_body(self, body: bytes | bytearray) -> bool:
        """Whether a response body that starts so must be kept whole to be redacted.

        A JSON object body cut into several events could not be parsed per
        piece: when JSON paths are configured it is stored as one event.
        """
        return bool(self.json_paths) and _looks_like_object(body)

    def frame(self, raw: bytes) -> tuple[bytes, list[str]] | None:
        """An SSE frame with the paths its ``response`` object echoes replaced.

        ``None`` when nothing was replaced (the usual case: call it only for
        :data:`ECHO_TYPES` frames, or frames whose JSON did not parse).
        Lines other than ``data`` lines, line terminators and the blank line
        that ends the frame are kept byte for byte.
        """
        if not self.json_paths or b"data" not in raw:
            return None
        lines = raw.splitlines(keepends=True)  # bytes split on CR, LF and CRLF only
        data_lines: list[tuple[int, bytes, bytes, bytes]] = []
        for index, line in enumerate(lines):
            content = line.rstrip(b"\r\n")
            body = content[3:] if index == 0 and content.startswith(_BOM) else content
            if body == b"data" or body.startswith(b"data:"):
                value_at = len(content) - len(body) + (6 if body.startswith(b"data: ") else 5)
                value_at = min(value_at, len(content))
                data_lines.append(
                    (index, content[:value_at], content[value_at:], line[len(content) :])
                )
        if not data_lines:
            return None
        text = "\n".join(v.decode("utf-8", "surrogateescape") for _, _, v, _ in data_lines)
        new_text, hits = _redact_json_text(text, [(p, [("response", *p)]) for p in self.json_paths])
        if not hits:
            return None
        # A replaced value holds no line break, so the data spans at most as many lines.
        values = new_text.split("\n")
        by_index = {index: k for k, (index, _, _, _) in enumerate(data_lines)}
        out = bytearray()
        for index, line in enumerate(lines):
            k = by_index.get(index)
            if k is None:
                out += line
            elif k < len(values):
                _, prefix, _, terminator = data_lines[k]
                out += prefix + values[k].encode("utf-8", "surrogateescape") + terminator
        return bytes(out), hits


_BOM: Final = b"\xef\xbb\xbf"


def _strip_userinfo(url: str) -> tuple[str, bool]:
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url, False
    start = scheme_end + 3
    end = len(url)
    for mark in "/?#":
        at = url.find(mark, start)
        if 0 <= at < end:
            end = at
    at = url.rfind("@", start, end)
    if at < 0:
        return url, False
    return url[:start] + url[at + 1 :], True


def _looks_like_object(body: bytes | bytearray) -> bool:
    return body[:64].lstrip()[:1] == b"{"


def _redact_json_bytes(
    body: bytes, paths: Sequence[tuple[Path, Sequence[Path]]]
) -> tuple[bytes, list[str]]:
    # surrogateescape: bytes that are not UTF-8 come back exactly as they were.
    text = body.decode("utf-8", "surrogateescape")
    new_text, hits = _redact_json_text(text, paths)
    if not hits:
        return body, []
    return new_text.encode("utf-8", "surrogateescape"), hits


def _redact_json_text(
    text: str, paths: Sequence[tuple[Path, Sequence[Path]]]
) -> tuple[str, list[str]]:
    """``text`` with the values at each path's locations replaced; the paths that hit.

    Each entry is (the configured path, where to look for it in ``text``).
    """
    spans: list[tuple[int, int]] = []
    hits: list[str] = []
    for configured, locations in paths:
        found: list[tuple[int, int]] = []
        for location in locations:
            found.extend(_spans(text, location))
        if found:
            hits.append(".".join(configured))
            spans.extend(found)
    if not spans:
        return text, []
    pieces: list[str] = []
    done = 0
    for start, end in sorted(spans):
        if start < done:
            continue  # inside a value already replaced (a path and one below it)
        pieces.append(text[done:start])
        pieces.append(_REDACTED_JSON)
        done = end
    pieces.append(text[done:])
    return "".join(pieces), hits


# The C scanner json.loads uses: it parses one value at an index and says where
# it ends, which is all it takes to walk to a path without parsing the rest.
_DECODER: Any = json.JSONDecoder()  # Any: typeshed does not declare scan_once
_scan_once: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once
_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
_SPACES: Final = frozenset(" \t\n\r")


class _End(Exception):
    """The text ends, or stops being JSON, here."""


def _skip(text: str, i: int) -> int:
    if text[i : i + 1] not in _SPACES:
        return i  # compact JSON, the API's own: no whitespace to skip
    match = _WHITESPACE.match(text, i)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _scan(text: str, i: int) -> tuple[Any, int]:
    try:
        return _scan_once(text, i)
    except (StopIteration, ValueError, RecursionError):
        raise _End from None


def _spans(text: str, path: Path) -> list[tuple[int, int]]:
    """Where the values at ``path`` are in the JSON ``text`` (start, end).

    Text cut off inside a value at ``path`` gives a span to the end of the
    text: what is there is still the secret's beginning.
    """
    out: list[tuple[int, int]] = []
    with contextlib.suppress(_End):
        _walk(text, _skip(text, 0), path, out)
    return out


def _walk(text: str, i: int, path: Path, out: list[tuple[int, int]]) -> int:
    """Collect the spans of ``path`` in the value at ``text[i]``; return where that value ends."""
    if not path:
        try:
            end = _scan(text, i)[1]
        except _End:
            if i < len(text):
                out.append((i, len(text)))
            raise
        out.append((i, end))
        return end
    head, rest = path[0], path[1:]
    opening = text[i : i + 1]
    if opening not in ("{", "["):
        return _scan(text, i)[1]
    closing = "}" if opening == "{" else "]"
    i = _skip(text, i + 1)
    if text.startswith(closing, i):
        return i + 1
    index = 0
    while True:
        if opening == "{":
            if not text.startswith('"', i):
                raise _End
            key, i = _scan(text, i)
            i = _skip(text, i)
            if not text.startswith(":", i):
                raise _End
            i = _skip(text, i + 1)
            wanted = head in ("*", key)
        else:
            wanted = head in ("*", str(index))
            index += 1
        i = _walk(text, i, rest, out) if wanted else _scan(text, i)[1]
        i = _skip(text, i)
        if text.startswith(",", i):
            i = _skip(text, i + 1)
        elif text.startswith(closing, i):
            return i + 1
        else:
            raise _End

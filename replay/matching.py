"""Matching live requests to recorded exchanges, and saying why one does not match.

Guarantees:

* A request matches a recorded exchange when the method, the URL path, the
  query (as a multiset of pairs: order does not matter) and the body are equal.
  Bodies are compared parsed: JSON by value (key order and spacing do not
  matter), multipart forms part by part (the random boundary and the order of
  parts do not matter), anything else byte for byte. Fields named in
  :attr:`MatchOptions.ignore_body_fields` are left out of JSON bodies on both
  sides; headers take part only when :attr:`MatchOptions.match_headers` is set,
  minus :attr:`MatchOptions.ignore_headers`. The host is never compared, so a
  tape recorded against ``api.openai.com`` replays for any ``base_url``.
* What was redacted when the exchange was recorded is left out of matching
  on both sides, without configuration: the JSON paths its request event
  lists in ``redacted_paths``, and the query parameters and headers whose
  recorded value is ``<redacted>`` (a parameter recorded as ``<redacted>``
  whole, a key given as its name, leaves out the live parameters whose name
  holds a key). Queries split at ``&`` and ``;``, as redaction splits them
  (:func:`recorder.redact.query_pairs`). Recording with
  ``redact_json_paths=["metadata.user"]`` and replaying the same code matches.
* A recorded exchange whose request the source did not keep
  (``Exchange.request_known`` is false, e.g. vercel/ai fixtures) matches any
  body and any headers for its method and path.
* Each recorded exchange plays once, and identical requests get the
  identical recorded exchanges in recorded order. With
  :attr:`MatchOptions.allow_repeats` a request that matches only exchanges
  already played gets the last of them again.
* A request that matches nothing raises :class:`NoMatch`, whose message names
  the closest recorded request and lists each difference as
  ``field: recorded X, got Y``; :meth:`Matcher.unplayed` lists what was never
  served. The matcher is thread-safe (the replay server shares one).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recorder.errors import CodetapeError
from recorder.redact import REDACTED, Redactor, holds_api_key, query_pairs
from replay.source import Exchange, json_body, split_url

__all__ = [
    "DEFAULT_IGNORED_HEADERS",
    "Difference",
    "MatchOptions",
    "Matcher",
    "NoMatch",
    "Redactions",
    "RequestView",
    "UnplayedExchanges",
]

# Headers that differ between any two runs or clients and say nothing about
# what was asked: auth (redacted when recorded), framing, client identity.
DEFAULT_IGNORED_HEADERS = frozenset(
    {
        "accept-encoding",
        "authorization",
        "api-key",
        "connection",
        "content-length",
        "cookie",
        "host",
        "idempotency-key",
        "openai-organization",
        "openai-project",
        "user-agent",
        "x-stainless-arch",
        "x-stainless-async",
        "x-stainless-lang",
        "x-stainless-os",
        "x-stainless-package-version",
        "x-stainless-read-timeout",
        "x-stainless-retry-count",
        "x-stainless-runtime",
        "x-stainless-runtime-version",
        "x-stainless-timeout",
    }
)
_MAX_DIFFS = 12
_MAX_VALUE = 80


class NoMatch(CodetapeError):
    """A request matched no recorded exchange; the message says what differs."""


class UnplayedExchanges(CodetapeError):
    """Recorded exchanges were never requested."""


@dataclass(frozen=True, slots=True)
class MatchOptions:
    """How requests are compared with recorded ones."""

    ignore_body_fields: frozenset[str] = frozenset()
    """JSON body fields left out on both sides: a top-level name (``"user"``) or a
    dotted path (``"metadata.run_id"``)."""
    match_headers: bool = False
    """Also compare request headers (those recorded, minus ``ignore_headers``)."""
    ignore_headers: frozenset[str] = DEFAULT_IGNORED_HEADERS
    allow_repeats: bool = False
    """Serve the last matching exchange again once all matching ones were played."""

    @classmethod
    def build(
        cls,
        ignore_body_fields: Iterable[str] = (),
        *,
        match_headers: bool = False,
        ignore_headers: Iterable[str] | None = None,
        allow_repeats: bool = False,
    ) -> MatchOptions:
        headers = DEFAULT_IGNORED_HEADERS if ignore_headers is None else ignore_headers
        return cls(
            frozenset(ignore_body_fields),
            match_headers,
            frozenset(h.lower() for h in headers),
            allow_repeats,
        )


@dataclass(frozen=True, slots=True)
class Redactions:
    """What a recorded request had redacted, left out of matching on both sides."""

    paths: tuple[str, ...] = ()
    """Dotted JSON body paths (``*`` matches any key or item)."""
    query: frozenset[str] = frozenset()
    headers: frozenset[str] = frozenset()
    """Lower-case header names."""

    @classmethod
    def of(cls, exchange: Exchange) -> Redactions:
        return cls(
            exchange.redacted_paths,
            frozenset(k for k, v in exchange.query if REDACTED in (k, v)),
            frozenset(k.lower() for k, v in exchange.request_headers if v == REDACTED),
        )

    def __bool__(self) -> bool:
        return bool(self.paths or self.query or self.headers)


def _redacted_param(name: str, redactions: Redactions) -> bool:
    """Whether the query parameter ``name`` is one the recording had redacted."""
    if name in redactions.query:
        return True
    # Recorded as "<redacted>" whole: its name was a key, which the live one is too.
    return REDACTED in redactions.query and holds_api_key(name)


@dataclass(frozen=True, slots=True)
class Difference:
    """One field where a request differs from a recorded one."""

    field: str
    recorded: str
    got: str

    def __str__(self) -> str:
        return f"{self.field}: recorded {self.recorded}, got {self.got}"


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request reduced to what matching compares."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    body_kind: str
    """``"empty"``, ``"json"``, ``"multipart"`` or ``"bytes"``."""
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    body_known: bool = True

    @classmethod
    def of(
        cls,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        options: MatchOptions,
        *,
        body_known: bool = True,
    ) -> RequestView:
        parts = split_url(url)
        header_map: dict[str, str] = {}
        for key, value in headers:
            header_map[key.lower()] = value
        content_type = header_map.get("content-type", "")
        kind, value = _normalise_body(body, content_type, options)
        kept: dict[str, str] = {}
        if options.match_headers:
            kept = {k: v for k, v in header_map.items() if k not in options.ignore_headers}
            if "content-type" in kept:
                # The multipart boundary is random per request: compare the media type.
                kept["content-type"] = content_type.split(";")[0].strip().lower()
        return cls(
            method=method.upper(),
            path=parts.path or "/",
            query=tuple(sorted(query_pairs(parts.query))),
            body_kind=kind,
            body=value,
            headers=kept,
            body_known=body_known,
        )

    @classmethod
    def of_exchange(cls, exchange: Exchange, options: MatchOptions) -> RequestView:
        view = cls.of(
            exchange.method,
            exchange.url,
            exchange.request_headers,
            exchange.request_body,
            options,
            body_known=exchange.request_known,
        )
        redactions = Redactions.of(exchange)
        return view.without(redactions) if redactions else view

    def without(self, redactions: Redactions) -> RequestView:
        """This view minus what ``redactions`` names."""
        body = self.body
        if self.body_kind == "json":
            for dotted in redactions.paths:
                body = _drop_field(body, dotted.split("."))
        return RequestView(
            method=self.method,
            path=self.path,
            query=tuple(pair for pair in self.query if not _redacted_param(pair[0], redactions)),
            body_kind=self.body_kind,
            body=body,
            headers={k: v for k, v in self.headers.items() if k not in redactions.headers},
            body_known=self.body_known,
        )


def _drop_field(value: Any, dotted: Sequence[str]) -> Any:
    """``value`` without what ``dotted`` names (``*``: any key or item; a number: an index)."""
    if not dotted:
        return value
    head, rest = dotted[0], dotted[1:]
    if isinstance(value, dict):
        keys = list(value) if head == "*" else [head] if head in value else []
        if not keys:
            return value
        copy = dict(value)
        for key in keys:
            if rest:
                copy[key] = _drop_field(copy[key], rest)
            else:
                del copy[key]
        return copy
    if isinstance(value, list) and (head == "*" or head.isdigit()):
        picked = range(len(value)) if head == "*" else [int(head)]
        if not rest:
            return [v for i, v in enumerate(value) if i not in picked]
        return [_drop_field(v, rest) if i in picked else v for i, v in enumerate(value)]
    return value


def _multipart(body: bytes, content_type: str) -> list[dict[str, Any]] | None:
    """The parts of a multipart form as ``{name, filename, content}``, sorted by name."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        # A recorded body may come without its content type: take the first line.
        first = body.split(b"\r\n", 1)[0]
        if not first.startswith(b"--") or len(first) < 3:
            return None
        boundary = first[2:].decode("latin-1")
    delimiter = b"--" + boundary.encode("latin-1")
    parts: list[dict[str, Any]] = []
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break
        head, sep, content = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            return None
        content = content.removesuffix(b"\r\n")
        info: dict[str, Any] = {"name": None, "filename": None}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() != "content-disposition":
                continue
            for param in value.split(";")[1:]:
                pkey, _, pvalue = param.strip().partition("=")
                if pkey.lower() in ("name", "filename"):
                    info[pkey.lower()] = pvalue.strip().strip('"')
        try:
            info["content"] = content.decode("utf-8")
        except UnicodeDecodeError:
            info["content"] = content
        parts.append(info)
    return sorted(parts, key=lambda p: (str(p["name"]), str(p["filename"])))


def _normalise_body(body: bytes, content_type: str, options: MatchOptions) -> tuple[str, Any]:
    if not body:
        return "empty", None
    parsed = json_body(body)
    if parsed is not None:
        for dotted in options.ignore_body_fields:
            parsed = _drop_field(parsed, dotted.split("."))
        return "json", parsed
    if content_type.lower().startswith("multipart/") or body.startswith(b"--"):
        parts = _multipart(body, content_type)
        if parts is not None:
            return "multipart", parts
    return "bytes", body


def _same(a: Any, b: Any) -> bool:
    """JSON equality: like ``==`` but ``true`` is not ``1`` (numbers compare by value)."""
    # A stack, not recursion: a body nested a few hundred deep parses, and must
    # compare without exhausting Python's recursion limit.
    pending = [(a, b)]
    while pending:
        a, b = pending.pop()
        if isinstance(a, bool) or isinstance(b, bool):
            if a is not b:
                return False
        elif isinstance(a, dict):
            if not isinstance(b, dict) or a.keys() != b.keys():
                return False
            pending.extend((a[k], b[k]) for k in a)
        elif isinstance(a, list):
            if not isinstance(b, list) or len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif a != b:
            return False
    return True


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError):
            text = repr(value)
        except RecursionError:
            text = "(a value nested too deeply to show)"
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


_MISSING = object()


def _json_diffs(recorded: Any, got: Any, path: str, out: list[Difference]) -> None:
    if len(out) >= _MAX_DIFFS:
        return
    if isinstance(recorded, dict) and isinstance(got, dict):
        for key in sorted(set(recorded) | set(got), key=str):
            r, g = recorded.get(key, _MISSING), got.get(key, _MISSING)
            sub = f"{path}.{key}"
            if r is _MISSING:
                out.append(Difference(sub, "(absent)", _show(g)))
            elif g is _MISSING:
                out.append(Difference(sub, _show(r), "(absent)"))
            else:
                _json_diffs(r, g, sub, out)
        return
    if isinstance(recorded, list) and isinstance(got, list):
        if len(recorded) != len(got):
            out.append(Difference(f"{path} length", str(len(recorded)), str(len(got))))
        for i, (r, g) in enumerate(zip(recorded, got, strict=False)):
            _json_diffs(r, g, f"{path}[{i}]", out)
        return
    if not _same(recorded, got):
        out.append(Difference(path, _show(recorded), _show(got)))


def differences(recorded: RequestView, got: RequestView) -> list[Difference]:
    """What differs between a recorded request and a live one (empty: they match)."""
    out: list[Difference] = []
    if recorded.method != got.method:
        out.append(Difference("method", recorded.method, got.method))
    if recorded.path != got.path:
        out.append(Difference("path", recorded.path, got.path))
    if recorded.query != got.query:
        rq, gq = dict(recorded.query), dict(got.query)
        for key in sorted(set(rq) | set(gq)):
            r, g = rq.get(key), gq.get(key)
            if r != g:
                out.append(
                    Difference(
                        f"query {key}",
                        "(absent)" if r is None else _show(r),
                        "(absent)" if g is None else _show(g),
                    )
                )
        if len(out) == (recorded.method != got.method) + (recorded.path != got.path):
            # Same keys and last values: the difference is in repeats or order of repeats.
            out.append(Difference("query", _show(recorded.query), _show(got.query)))
    if not recorded.body_known:
        return out
    if recorded.body_kind != got.body_kind:
        out.append(Difference("body", f"a {recorded.body_kind} body", f"a {got.body_kind} body"))
    elif recorded.body_kind == "json":
        try:
            _json_diffs(recorded.body, got.body, "body", out)
        except RecursionError:
            out.append(Difference("body", "JSON nested too deeply to compare", "a different one"))
    elif recorded.body_kind == "multipart":
        _json_diffs(_jsonable_parts(recorded.body), _jsonable_parts(got.body), "form", out)
    elif recorded.body != got.body:
        out.append(
            Difference(
                "body", f"{len(recorded.body)} bytes {_show(recorded.body)}", f"{_show(got.body)}"
            )
        )
    for key in sorted(recorded.headers):
        r, g = recorded.headers[key], got.headers.get(key)
        if g is None:
            out.append(Difference(f"header {key}", _show(r), "(absent)"))
        elif r != g:
            out.append(Difference(f"header {key}", _show(r), _show(g)))
    return out


def _jsonable_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for part in parts:
        content = part["content"]
        if isinstance(content, bytes):
            content = f"<{len(content)} bytes>"
        key = str(part["name"])
        while key in result:
            key += "'"
        result[key] = {"filename": part["filename"], "content": content}
    return result


class Matcher:
    """Hands out recorded exchanges to live requests (see the module docstring)."""

    def __init__(
        self,
        exchanges: Sequence[Exchange],
        options: MatchOptions | None = None,
        *,
        source: str = "the tape",
    ) -> None:
        self.options = options or MatchOptions()
        self.exchanges = list(exchanges)
        self.source = source
        self._views = [RequestView.of_exchange(x, self.options) for x in self.exchanges]
        self._redactions = [Redactions.of(x) for x in self.exchanges]
        self._played = [False] * len(self.exchanges)
        self._lock = threading.Lock()

    def view(
        self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> RequestView:
        return RequestView.of(method, url, headers, body, self.options)

    def _matches(self, index: int, got: RequestView) -> bool:
        recorded = self._views[index]
        if recorded.method != got.method or recorded.path != got.path:
            return False
        if recorded.query != got.query:
            return False
        if not recorded.body_known:
            return True
        if recorded.body_kind != got.body_kind or not _same(recorded.body, got.body):
            return False
        return all(got.headers.get(k) == v for k, v in recorded.headers.items())

    def match(
        self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Exchange:
        """The next recorded exchange for this request; raises :class:`NoMatch`."""
        got = _Adjusted(self.view(method, url, headers, body), self._redactions)
        with self._lock:
            repeat: int | None = None
            for index in range(len(self.exchanges)):
                if self._matches(index, got.view(index)):
                    if not self._played[index]:
                        self._played[index] = True
                        return self.exchanges[index]
                    repeat = index
            if repeat is not None and self.options.allow_repeats:
                return self.exchanges[repeat]
            raise NoMatch(self._explain(got, repeat))

    def _explain(self, adjusted: _Adjusted, played: int | None) -> str:
        got = adjusted.live
        shown = Redactor()  # a live secret in the query is not for the console either
        query = "&".join(
            REDACTED
            if holds_api_key(k)
            else f"{k}={REDACTED if shown.secret_query_param(k) or holds_api_key(v) else v}"
            for k, v in got.query
        )
        what = f"{got.method} {got.path}{'?' + query if query else ''}"
        if played is not None:
            return (
                f"{what} matches only {self.exchanges[played].describe()} in {self.source}, "
                "which was already played (each recorded exchange plays once; "
                "allow repeats to serve it again, or re-record)"
            )
        if not self.exchanges:
            return f"{what}: {self.source} holds no recorded exchanges"
        best: tuple[tuple[int, int, int, int], int, list[Difference]] | None = None
        for index, recorded in enumerate(self._views):
            diffs = differences(recorded, adjusted.view(index))
            score = (
                recorded.method != got.method,
                recorded.path != got.path,
                self._played[index],  # an exchange still to play is the likelier target
                len(diffs),
            )
            if best is None or score < best[0]:
                best = (score, index, diffs)
        assert best is not None
        _, index, diffs = best
        lines = [f"no recorded exchange in {self.source} matches {what}"]
        state = " (already played)" if self._played[index] else ""
        lines.append(f"closest is {self.exchanges[index].describe()}{state}, which differs in:")
        lines.extend(f"  {d}" for d in diffs)
        return "\n".join(lines)

    def unplayed(self) -> list[Exchange]:
        """Recorded exchanges not served yet, in recorded order."""
        with self._lock:
            return [x for x, done in zip(self.exchanges, self._played, strict=True) if not done]

    def played_count(self) -> int:
        with self._lock:
            return sum(self._played)

    def check_all_played(self) -> None:
        """Raise :class:`UnplayedExchanges` listing every exchange never requested."""
        left = self.unplayed()
        if left:
            listed = ", ".join(x.describe() for x in left)
            raise UnplayedExchanges(
                f"{len(left)} of {len(self.exchanges)} recorded exchanges in {self.source} "
                f"were never requested: {listed}"
            )

    def reset(self) -> None:
        with self._lock:
            self._played = [False] * len(self.exchanges)


class _Adjusted:
    """A live request as each recorded exchange compares it: minus what that one had redacted."""

    __slots__ = ("_cache", "_redactions", "live")

    def __init__(self, live: RequestView, redactions: Sequence[Redactions]) -> None:
        self.live = live
        self._redactions = redactions
        self._cache: dict[Redactions, RequestView] = {}

    def view(self, index: int) -> RequestView:
        redactions = self._redactions[index]
        if not redactions:
            return self.live
        view = self._cache.get(redactions)
        if view is None:
            view = self._cache[redactions] = self.live.without(redactions)
        return view

"""Fuzzing where requests enter the proxy: the target check, the ASGI app, raw HTTP bytes.

* :func:`upstream_url` turns any method, target and query into a URL on the
  upstream's own scheme, host and port, or refuses with :class:`BadTarget`.
* The proxy app, given any request uvicorn could hand it (any method, raw
  path, query, header bytes, body in pieces), answers with a status below 500
  (the upstream here always answers 200), and every request it forwarded is
  recorded; a client gone before its body was whole is not forwarded at all.
* A malformed request on the wire, sent to a real proxy on 127.0.0.1, gets a
  4xx and reaches neither the upstream nor the log.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx2
import pytest
from fake_upstream import serve
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from recorder.capture import CaptureSession
from recorder.events import EventKind
from recorder.proxy import RecordingProxy
from recorder.store import EventStore
from recorder.upstream import BadTarget, parse_upstream, upstream_url

UPSTREAM = "https://api.example.test:8443/base"

# What h11 hands over: lower-case token names; values of any byte but CR, LF
# and NUL (obs-text and other controls included), without surrounding blanks.
header_names = st.from_regex(rb"[a-z0-9!#$%&'*+.^_`|~-]{1,12}", fullmatch=True).filter(
    lambda b: b != b"host"
)
header_values = st.binary(max_size=20).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"").strip(b" \t")
)
scopes = st.fixed_dictionaries(
    {
        "method": st.one_of(
            st.sampled_from(["POST", "GET", "CONNECT", "TRACE", "OPTIONS", "post"]),
            st.text(min_size=1, max_size=8),
        ),
        "raw_path": st.one_of(
            st.binary(max_size=40),
            st.builds(lambda tail: b"/v1/" + tail, st.binary(max_size=30)),
            st.from_regex(rb"/v1/[A-Za-z0-9._~%!$&'()*+,;=:@/-]{0,30}", fullmatch=True),
        ),
        "query_string": st.one_of(
            st.just(b""),
            st.binary(max_size=20),
            st.from_regex(rb"[A-Za-z0-9=&%+._~-]{1,20}", fullmatch=True),
        ),
        "headers": st.lists(st.tuples(header_names, header_values), max_size=5),
    }
)
bodies = st.lists(st.binary(max_size=50), max_size=4)


@FUZZ
@given(method=st.text(max_size=10), target=st.binary(max_size=60), query=st.binary(max_size=30))
def test_every_forwarded_url_is_on_the_upstream(method: str, target: bytes, query: bytes) -> None:
    upstream = parse_upstream(UPSTREAM)
    try:
        url = upstream_url(upstream, method, target, query)
    except BadTarget as exc:
        assert 400 <= exc.status < 500 and str(exc)
        return
    assert (url.scheme, url.host, url.port) == ("https", "api.example.test", 8443)
    assert url.raw_path.startswith(b"/base/")


def _run_app(proxy: RecordingProxy, scope: dict[str, Any], pieces: list[bytes]) -> list[dict]:  # type: ignore[type-arg]
    """Call the ASGI app once; the messages it sent back."""
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces or [b""])
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # the client stays: no disconnect
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = scope["raw_path"].decode("latin-1")
    asyncio.run(proxy({"type": "http", "path": path, **scope}, receive, send))
    return sent


def test_any_request_the_server_hands_over_is_answered_below_500(store: EventStore) -> None:
    forwarded: list[httpx2.Request] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        forwarded.append(request)
        return httpx2.Response(200, json={"ok": True})

    session = CaptureSession(store, "fuzzed")
    proxy = RecordingProxy(session, UPSTREAM, transport=httpx2.MockTransport(upstream))
    statuses: list[int] = []

    @FUZZ
    @given(scope=scopes, pieces=bodies)
    def run(scope: dict[str, Any], pieces: list[bytes]) -> None:
        sent = _run_app(proxy, scope, pieces)
        start = sent[0]
        assert start["type"] == "http.response.start"
        assert start["status"] < 500, (start, sent[1:])
        statuses.append(start["status"])

    run()
    session.close()
    assert 200 in statuses and 400 in statuses, statuses  # both ways were exercised
    assert len(store.exchanges(session.id)) == len(forwarded) == statuses.count(200)
    assert store.verify().ok


def test_a_header_value_with_obs_text_is_forwarded_and_recorded(store: EventStore) -> None:
    # It used to be a 500: httpx2 refused the latin-1 string as non-ASCII.
    seen: list[httpx2.Request] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={})

    session = CaptureSession(store, "obs-text")
    proxy = RecordingProxy(session, UPSTREAM, transport=httpx2.MockTransport(upstream))
    scope = {
        "method": "POST",
        "path": "/v1/responses",
        "raw_path": b"/v1/responses",
        "query_string": b"",
        "headers": [(b"x-caf", b"caf\xe9"), (b"content-type", b"application/json")],
    }
    sent = _run_app(proxy, scope, [b"{}"])
    session.close()
    assert sent[0]["status"] == 200
    assert (b"x-caf", b"caf\xe9") in seen[0].headers.raw
    [exchange] = store.exchanges(session.id)
    [request] = [e for e in store.exchange_events(exchange.id) if e.kind is EventKind.REQUEST]
    assert ["x-caf", "café"] in request.meta["headers"]


def test_a_client_gone_before_its_body_is_whole_is_not_forwarded(store: EventStore) -> None:
    seen: list[httpx2.Request] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={})

    session = CaptureSession(store, "cut-body")
    proxy = RecordingProxy(session, UPSTREAM, transport=httpx2.MockTransport(upstream))
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"input": "half', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/responses",
        "raw_path": b"/v1/responses",
        "query_string": b"",
        "headers": [(b"content-length", b"100")],
    }
    asyncio.run(proxy(scope, receive, send))
    session.close()
    assert seen == [] and sent == []  # half a request is not sent on, nor recorded
    assert store.exchanges(session.id) == []


class Upstream:
    """An ASGI app that notes every request and answers 200."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        self.seen.append(scope["raw_path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


MALFORMED = {
    "garbage": b"\x00\x01\x02 hello\r\n\r\n",
    "no HTTP version": b"GET /v1/x\r\n\r\n",
    "space in the target": b"GET /v1/a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "header without a colon": b"GET /v1/x HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
    "space before a colon": b"GET /v1/x HTTP/1.1\r\nHost : a\r\n\r\n",
    "Content-Length not a number": (
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"
    ),
    "negative Content-Length": b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    "two Content-Lengths": (
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    ),
    "bad chunk size": (
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"
    ),
    "non-ASCII target": b"GET /v1/\xff HTTP/1.1\r\nHost: a\r\n\r\n",
    "200 KB header": b"GET /v1/x HTTP/1.1\r\nHost: a\r\nX-A: " + b"a" * 200_000 + b"\r\n\r\n",
    "NUL in a header": b"GET /v1/x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "no method": b" /v1/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "DEL in the method": b"G\x7fT /v1/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "no Host": b"GET /v1/x HTTP/1.1\r\n\r\n",
    "absolute-form target": b"GET http://evil.test/v1/x HTTP/1.1\r\nHost: a\r\n\r\n",
    "asterisk target": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "CONNECT": b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
}


def _status(base: str, raw: bytes) -> int:
    """Send ``raw`` and read the status line; the read timeout only turns a hang into a failure."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(raw)
        data = b""
        try:
            while b"\r\n" not in data and (chunk := s.recv(65536)):
                data += chunk
        except ConnectionResetError:
            pass  # after the answer, a server may reset a connection it did not read out
    assert data.startswith(b"HTTP/1.1 "), data[:80]
    return int(data.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def live_proxy(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from recorder.store import migrate

    url = f"sqlite:///{tmp_path_factory.mktemp('raw') / 'raw.db'}"
    migrate.upgrade(url)
    upstream = Upstream()
    with EventStore.open(url) as store:
        session = CaptureSession(store, "raw")
        with serve(upstream) as upstream_url, serve(RecordingProxy(session, upstream_url)) as p:
            yield p, upstream, store, session
        session.close()


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_request_on_the_wire_gets_a_4xx(live_proxy: Any, name: str) -> None:
    proxy, upstream, store, session = live_proxy
    status = _status(proxy, MALFORMED[name])
    assert 400 <= status < 500, status
    assert upstream.seen == []
    assert store.exchanges(session.id) == []

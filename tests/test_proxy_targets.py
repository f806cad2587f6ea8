"""The proxy goes only to its upstream: request targets that could steer it elsewhere are refused.

Each case sends a raw HTTP request to a real proxy on 127.0.0.1 whose
upstream is one local server, with a second local server standing for the
attacker's host; neither may see a refused request (nor the key it carries).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fake_upstream import serve

from recorder.capture import CaptureSession
from recorder.errors import CodetapeError
from recorder.proxy import RecordingProxy
from recorder.store import EventStore
from recorder.upstream import BadTarget, parse_upstream, upstream_url

KEY = "sk-" + "target-SECRET-0123456789"


class Recorder:
    """An ASGI app that notes every request it gets and answers 200."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes, bytes]] = []

    async def __call__(self, scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def,type-arg]
        if scope["type"] != "http":
            return
        self.seen.append((scope["method"], scope["raw_path"], scope["query_string"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def raw_request(base: str, method: str, target: str) -> int:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.fixture
def proxied(store: EventStore) -> Iterator[tuple[str, Recorder, Recorder, str]]:
    upstream, attacker = Recorder(), Recorder()
    session = CaptureSession(store, "targets")
    with (
        serve(upstream) as upstream_url_,
        serve(attacker) as attacker_url,
        serve(RecordingProxy(session, upstream_url_)) as proxy,
    ):
        yield proxy, upstream, attacker, attacker_url.removeprefix("http://")
    session.close()


REFUSED = [
    ("GET", "@{a}/v1/responses", 400),
    ("GET", "//{a}/v1/responses", 400),
    ("GET", "http://{a}/v1/responses", 400),
    ("GET", "https://api.openai.com@{a}/v1/responses", 400),
    ("GET", "\\\\{a}/v1/responses", 400),
    ("GET", "/\\{a}/v1/responses", 400),
    ("GET", "/v1/%2e%2e/%2e%2e/admin", 400),
    ("GET", "/v1/%2E%2E/admin", 400),
    ("GET", "/v1/..%2fadmin", 400),
    ("GET", "/v1/%252e%252e/admin", 400),
    ("GET", "/v1/../admin", 400),
    ("GET", "/v1/./responses", 400),
    ("OPTIONS", "*", 400),
    ("CONNECT", "{a}", 405),
    ("TRACE", "/v1/responses", 405),
]


@pytest.mark.parametrize(("method", "target", "status"), REFUSED)
def test_targets_that_would_leave_the_upstream_are_refused(
    proxied: tuple[str, Recorder, Recorder, str], method: str, target: str, status: int
) -> None:
    proxy, upstream, attacker, attacker_host = proxied
    got = raw_request(proxy, method, target.format(a=attacker_host))
    assert got == status
    assert attacker.seen == [] and upstream.seen == []


def test_plain_paths_still_reach_the_upstream_with_their_query(
    proxied: tuple[str, Recorder, Recorder, str],
) -> None:
    proxy, upstream, attacker, _ = proxied
    assert raw_request(proxy, "GET", "/v1/files/a@b.txt/content?x=1&y=%2F") == 200
    assert raw_request(proxy, "POST", "/v1/responses") == 200
    assert upstream.seen == [
        ("GET", b"/v1/files/a@b.txt/content", b"x=1&y=%2F"),
        ("POST", b"/v1/responses", b""),
    ]
    assert attacker.seen == []


def test_the_upstream_base_path_is_kept_and_cannot_be_left() -> None:
    up = parse_upstream("https://gateway.example:8443/openai/")
    url = upstream_url(up, "POST", b"/v1/responses", b"a=1")
    assert str(url) == "https://gateway.example:8443/openai/v1/responses?a=1"
    with pytest.raises(BadTarget):
        upstream_url(up, "GET", b"/%2e%2e/admin", b"")
    default = parse_upstream("https://api.openai.com")
    with pytest.raises(BadTarget):
        upstream_url(default, "GET", b"@evil.example/v1/responses", b"")


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("ftp://example.com", "http:// or https://"),
        ("api.openai.com", "http:// or https://"),
        ("https://user:pw@api.openai.com", "user name or password"),
        ("https://api.openai.com/?x=1", "query or fragment"),
        ("https://api.openai.com/%2e%2e/x", "'..'"),
    ],
)
def test_a_bad_upstream_is_refused_with_a_message(bad: str, says: str) -> None:
    with pytest.raises(CodetapeError) as info:
        parse_upstream(bad)
    assert says in str(info.value)

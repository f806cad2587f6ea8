"""The proxy's bound on request bodies: over the limit is 413, sent nowhere, recorded nowhere.

Real servers on 127.0.0.1 (uvicorn for the proxy and the fake upstream).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from click.testing import CliRunner
from fake_upstream import Upstream, load_tape, serve

from recorder.capture import CaptureSession
from recorder.cli import main
from recorder.proxy import RecordingProxy
from recorder.store import EventStore

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
LIMIT = 1_000


def _chunks(size: int) -> Iterator[bytes]:
    # A body without Content-Length (chunked): only counting what arrives can bound it.
    for _ in range(size // 100):
        yield b"x" * 100


def test_bodies_over_the_limit_are_refused_and_not_recorded(store: EventStore) -> None:
    upstream = Upstream(load_tape(CI_STREAM))
    session = CaptureSession(store, "limited")
    with (
        serve(upstream) as upstream_url,
        serve(RecordingProxy(session, upstream_url, max_request_bytes=LIMIT)) as proxy,
    ):
        with httpx2.Client(base_url=proxy, timeout=30) as client:
            declared = client.post("/v1/responses", content=b"{" + b" " * LIMIT + b"}")
            streamed = client.post("/v1/responses", content=_chunks(LIMIT + 200))
        # A new connection: the refused ones may have been closed with their bodies unread.
        with httpx2.Client(base_url=proxy, timeout=30) as client:
            at_limit = client.post(
                "/v1/responses", content=b'{"model":"m","stream":true}'.ljust(LIMIT)
            )
    session.close()
    for refused in (declared, streamed):
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["type"] == "proxy_error" and f"{LIMIT} bytes" in error["message"]
    assert at_limit.status_code == 200
    assert len(upstream.requests) == 1  # only the body within the limit went upstream
    [exchange] = store.exchanges(session.id)
    assert exchange.outcome == "completed"
    assert store.verify().ok


def test_a_negative_limit_is_refused(store: EventStore) -> None:
    session = CaptureSession(store, "bad-limit")
    try:
        with pytest.raises(ValueError, match="max_request_bytes"):
            RecordingProxy(session, "http://127.0.0.1:9", max_request_bytes=-1)
    finally:
        session.close()


@pytest.mark.parametrize("size", ["12XB", "MiB", "-5", "1.5MB"])
def test_cli_refuses_a_size_it_cannot_read(size: str) -> None:
    result = CliRunner().invoke(
        main, ["proxy", "--max-request-size", size, "--db", "sqlite:///:memory:"]
    )
    assert result.exit_code == 2
    assert "wants a size such as 64MiB" in result.output
    assert "Traceback" not in result.output

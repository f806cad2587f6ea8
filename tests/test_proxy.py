"""The recording proxy: the openai SDK pointed at it, a fake upstream behind it, on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx2
import openai
import pytest
from fake_upstream import Upstream, free_port, load_tape, serve

from recorder.capture import CaptureSession
from recorder.events import EventKind
from recorder.proxy import RecordingProxy
from recorder.store import EventStore, migrate

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
# A fake key, spelled in pieces so that secret scanners do not flag this file.
KEY = "sk-" + "proxy-SECRET-0123456789"


def test_sdk_through_the_proxy_streams_and_records(store: EventStore) -> None:
    first_event = threading.Event()
    held: list[bool] = []

    def before_frame(_exchange: int, k: int) -> None:
        if k == 1:
            # Frame 1 leaves the upstream only once the SDK, behind the proxy,
            # has event 0: a buffering proxy would time out here.
            held.append(first_event.wait(30))

    upstream = Upstream(load_tape(CI_STREAM), before_frame=before_frame)
    session = CaptureSession(store, "proxied")
    types = []
    with (
        serve(upstream) as upstream_url,
        serve(RecordingProxy(session, upstream_url)) as proxy,
        openai.OpenAI(api_key=KEY, base_url=proxy + "/v1", max_retries=0) as client,
    ):
        for event in client.responses.create(model="m", input="x", stream=True):
            first_event.set()
            types.append(event.type)
    session.close()
    assert held == [True] and len(types) == 491

    [x] = store.exchanges(session.id)
    events = store.exchange_events(x.id)
    assert x.outcome == "completed" and x.url.endswith("/v1/responses")
    body = b"".join(e.payload for e in events if e.kind is EventKind.SSE)
    assert body == upstream.scripts[0].body
    assert events[0].payload == upstream.requests[0].content  # request forwarded as sent
    headers = dict(events[0].meta["headers"])
    assert headers["authorization"] == "<redacted>"
    assert KEY not in str(events[0].meta)
    assert store.verify().ok


def test_upstream_errors_and_unreachable_upstream(store: EventStore) -> None:
    upstream = Upstream(load_tape("pydantic-ai/test_openai_responses_model_http_error.jsonl"))
    session = CaptureSession(store, "errors")
    with (
        serve(upstream) as upstream_url,
        serve(RecordingProxy(session, upstream_url)) as proxy,
        openai.OpenAI(api_key=KEY, base_url=proxy + "/v1", max_retries=0) as client,
        pytest.raises(openai.BadRequestError),
    ):
        client.responses.create(model="m", input="x", stream=True)
    # The upstream is gone now: the proxy answers 502 and records a transport error.
    with serve(RecordingProxy(session, upstream_url)) as proxy:
        reply = httpx2.post(proxy + "/v1/responses", content=b"{}")
        assert reply.status_code == 502 and "upstream unreachable" in reply.text
    session.close()
    outcomes = [x.outcome for x in store.exchanges(session.id)]
    assert outcomes == ["http_error", "transport_error"]


def test_client_hanging_up_while_the_upstream_is_silent_is_recorded_at_once(
    store: EventStore,
) -> None:
    release = threading.Event()

    def before_frame(_exchange: int, k: int) -> None:
        if k == 5:
            # The upstream goes quiet, as a code interpreter stream does while
            # the code runs; the hang-up comes during the silence.
            release.wait(60)

    upstream = Upstream(load_tape(CI_STREAM), before_frame=before_frame)
    session = CaptureSession(store, "hangup")
    ended = None
    try:
        with serve(upstream) as upstream_url, serve(RecordingProxy(session, upstream_url)) as proxy:
            with (
                httpx2.Client() as http,
                http.stream("POST", proxy + "/v1/responses", content=b"{}") as r,
            ):
                received = b""
                for chunk in r.iter_raw():
                    received += chunk
                    if received.count(b"\n\n") >= 5:
                        break
            # The upstream still holds frame 5: only the hang-up can end the exchange.
            for _ in range(1000):
                if session.stats.open_exchanges == 0:
                    ended = not release.is_set()
                    break
                threading.Event().wait(0.01)
            release.set()
    finally:
        release.set()
    session.close()
    assert ended is True
    [x] = store.exchanges(session.id)
    assert x.outcome == "client_closed" and "the client disconnected" in (x.reason or "")
    assert x.sse_events == 5
    assert store.verify().open_exchanges == []


@pytest.mark.slow
def test_codetape_proxy_command_records_until_stopped(sqlite_url: str) -> None:
    import os
    import signal
    import socket
    import time

    migrate.upgrade(sqlite_url)
    upstream = Upstream(load_tape(CI_STREAM))
    port = free_port()
    with serve(upstream) as upstream_url:
        proxy = _proxy_process(f"127.0.0.1:{port}", upstream_url, "cli-proxy", sqlite_url)
        try:
            for _ in range(3000):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.01)
            base = f"http://127.0.0.1:{port}/v1"
            with openai.OpenAI(api_key=KEY, base_url=base, max_retries=0) as client:
                count = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
        finally:
            os.kill(proxy.pid, signal.SIGTERM)
            _, err = proxy.communicate(timeout=60)
    assert proxy.returncode == 0, err
    assert count == 491 and "recording proxy on" in err
    with EventStore.open(sqlite_url) as store:
        session = store.find_session("cli-proxy")
        assert session.closed
        [x] = store.exchanges(session.id)
        assert x.outcome == "completed" and x.sse_events == 491


def test_an_address_in_use_is_one_error_and_records_nothing(sqlite_url: str) -> None:
    import socket

    from click.testing import CliRunner

    from recorder.cli import main

    migrate.upgrade(sqlite_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main,
            [
                "proxy",
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                "http://127.0.0.1:9",
                "--db",
                sqlite_url,
            ],
        )
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    with EventStore.open(sqlite_url) as store:
        assert store.sessions() == []


@pytest.mark.slow
def test_port_0_prints_the_port_the_proxy_listens_on(sqlite_url: str) -> None:
    import os
    import re
    import signal

    migrate.upgrade(sqlite_url)
    upstream = Upstream(load_tape(CI_STREAM))
    with serve(upstream) as upstream_url:
        proxy = _proxy_process("127.0.0.1:0", upstream_url, "port-0", sqlite_url)
        try:
            assert proxy.stderr is not None
            banner = proxy.stderr.readline()
            found = re.match(r"recording proxy on http://127\.0\.0\.1:(\d+) ", banner)
            assert found, banner
            port = int(found.group(1))
            assert port != 0
            base = f"http://127.0.0.1:{port}/v1"
            with openai.OpenAI(api_key=KEY, base_url=base, max_retries=0) as client:
                count = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
        finally:
            os.kill(proxy.pid, signal.SIGTERM)
            _, err = proxy.communicate(timeout=60)
    assert proxy.returncode == 0, err
    assert count == 491


def _proxy_process(listen: str, upstream_url: str, session: str, db: str) -> subprocess.Popen[str]:
    """``codetape proxy`` in a child process, its stderr piped (text)."""
    options = ["--listen", listen, "--upstream", upstream_url, "--session", session, "--db", db]
    return subprocess.Popen(
        [sys.executable, "-c", "from recorder.cli import main; main()", "proxy", *options],
        stderr=subprocess.PIPE,
        text=True,
    )

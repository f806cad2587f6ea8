"""The replay server over real HTTP on 127.0.0.1, and ``codetape serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai import OpenAI

from replay.reissue import reissue
from replay.server import STATUS_PATH, ReplayApp, ReplayServer
from replay.source import Recording, load_tape

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT / "fixtures" / "realdata"
TAPES = sorted(REALDATA.rglob("*.jsonl"))
STREAM = REALDATA / "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"


def _reference(recording: Recording) -> list[Any]:
    """The SDK reading the recorded bytes itself (see tests/test_replay.py)."""
    queue = list(recording.exchanges)

    def handler(request: httpx2.Request) -> httpx2.Response:
        x = queue.pop(0)
        assert x.status is not None
        return httpx2.Response(x.status, headers=x.replay_headers(), content=x.body)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    with OpenAI(api_key="t", base_url="https://api.openai.com/v1", http_client=http) as client:
        return [reissue(client, x) for x in recording.exchanges]


def test_every_fixture_tape_replays_over_http_like_the_original() -> None:
    with ReplayServer(ReplayApp(Recording("none", ()))) as server:
        for tape in TAPES:
            recording = load_tape(tape)
            server.app.load(recording)
            with OpenAI(api_key="t", base_url=server.base_url, max_retries=0) as client:
                got = [reissue(client, x) for x in recording.exchanges]
            status = server.app.status()
            assert got == _reference(recording), tape.name
            assert status["unplayed"] == [] and status["played"] == len(recording)


def test_streamed_bytes_over_http_are_the_recorded_bytes() -> None:
    recording = load_tape(STREAM)
    exchange = recording.exchanges[0]
    with (
        ReplayServer(ReplayApp(recording)) as server,
        httpx2.Client() as http,
        http.stream(
            "POST",
            f"{server.url}{exchange.path}",
            content=exchange.request_body,
            headers={"content-type": "application/json"},
        ) as response,
    ):
        body = b"".join(response.iter_raw())
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["transfer-encoding"] == "chunked"
    assert body == exchange.body


def test_no_match_is_a_404_carrying_the_diff_and_not_retried() -> None:
    recording = load_tape(STREAM)
    with (
        ReplayServer(ReplayApp(recording)) as server,
        OpenAI(api_key="t", base_url=server.base_url) as client,
    ):
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(model="gpt-4o-mini", input="something else")
        assert "closest is #1 POST /v1/responses, which differs in:" in info.value.message
        assert 'body.input: recorded [{"content"' in info.value.message
        with httpx2.Client() as http:
            status = http.get(server.url + STATUS_PATH).json()
    # The SDK would have retried a retryable error; x-should-retry: false stops it.
    assert status == {
        "source": STREAM.name,
        "exchanges": 1,
        "played": 0,
        "unplayed": ["#1 POST /v1/responses"],
    }


def test_clients_see_the_tape_by_name_not_by_its_path_here(tmp_path: Path) -> None:
    private = tmp_path / "home" / "alice" / "private-project"
    private.mkdir(parents=True)
    tape = private / "recorded.jsonl"
    tape.write_bytes(STREAM.read_bytes())
    # Built with the tape, and loaded into a running server later: both paths.
    with (
        ReplayServer(ReplayApp(load_tape(tape))) as first,
        ReplayServer(ReplayApp(Recording("none", ()))) as second,
    ):
        second.app.load(load_tape(tape))
        for server in (first, second):
            with httpx2.Client() as http:
                response = http.post(server.base_url + "/responses", json={"input": "no such"})
                status = http.get(server.url + STATUS_PATH).json()
            assert response.status_code == 404
            assert "no recorded exchange in recorded.jsonl matches" in response.text
            assert status["source"] == "recorded.jsonl"
            for shown in (response.text, json.dumps(status)):
                assert "alice" not in shown and str(tmp_path) not in shown


def test_original_pacing_through_the_server(tmp_path: Path) -> None:
    from test_replay import FakeClock

    recording = load_tape(STREAM)
    clock = FakeClock()
    # Give the recorded frames offsets 10 ms apart (imports carry none).
    from dataclasses import replace

    x = recording.exchanges[0]
    timed = replace(
        x,
        head_offset_ns=5_000_000,
        chunks=tuple(replace(c, offset_ns=(i + 1) * 10_000_000) for i, c in enumerate(x.chunks)),
    )
    app = ReplayApp(Recording("timed", (timed,)), pace="original", speed=2.0, clock=clock)
    with ReplayServer(app) as server, OpenAI(api_key="t", base_url=server.base_url) as client:
        events = reissue(client, x)
    assert len(events) == len(x.chunks)
    assert clock.sleeps[0] == 0.0025
    assert clock.sleeps[1:] == [0.0025] + [0.005] * (len(x.chunks) - 1)


def _codetape() -> str:
    script = Path(sys.executable).parent / "codetape"
    assert script.exists()
    return str(script)


def test_cli_serve_replays_to_a_non_python_style_client_and_reports_on_exit() -> None:
    recording = load_tape(STREAM)
    exchange = recording.exchanges[0]
    proc = subprocess.Popen(
        [_codetape(), "serve", str(STREAM), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("codetape: replaying 1 exchanges from "), banner
        base_url = banner.split("OpenAI base_url: ")[1].split(")")[0]
        # A plain HTTP client, as any language would use: just a POST to base_url.
        with httpx2.Client() as http:
            response = http.post(
                f"{base_url}/responses",
                content=json.dumps(json.loads(exchange.request_body)).encode(),
            )
        assert response.status_code == 200
        assert response.content == exchange.body
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "codetape: POST /v1/responses -> #1 POST /v1/responses" in err
    assert "codetape: played 1 of 1 exchanges" in err


def test_cli_serve_errors_are_one_line() -> None:
    result = subprocess.run(
        [_codetape(), "serve", str(STREAM), "--listen", "nonsense"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: Invalid value for '--listen': wants HOST:PORT (e.g. 127.0.0.1:8080; "
        "port 0 picks a free one), got 'nonsense' (see `codetape serve --help`)"
    )


def test_broken_off_and_unanswered_exchanges_fail_as_they_did() -> None:
    from dataclasses import replace

    x = load_tape(STREAM).exchanges[0]
    broken = replace(x, chunks=x.chunks[:5], outcome="transport_error", reason="peer reset")
    unanswered = replace(x, index=1, status=None, chunks=(), outcome="transport_error")
    app = ReplayApp(Recording("broken", (broken, unanswered)), match=None)
    with ReplayServer(app) as server, httpx2.Client() as http:
        got = bytearray()
        with (
            pytest.raises(httpx2.RemoteProtocolError),
            http.stream("POST", f"{server.url}/v1/responses", content=x.request_body) as r,
        ):
            for chunk in r.iter_raw():
                got += chunk
        assert bytes(got) == b"".join(c.data for c in x.chunks[:5])
        response = http.post(f"{server.url}/v1/responses", content=x.request_body)
        assert response.status_code == 502
        assert response.json()["error"]["message"] == "replayed: no response was recorded"


def test_the_announced_address_accepts_connections_before_the_server_runs() -> None:
    # serve() and proxy print the address once bound, before uvicorn starts: a
    # client connecting in between (a loaded CI machine) must queue, not be refused.
    from recorder.http_limits import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    try:
        with socket.create_connection(sock.getsockname()[:2], timeout=5):
            pass
    finally:
        sock.close()


def test_request_bodies_over_the_limit_are_refused_without_being_held() -> None:
    app = ReplayApp(load_tape(STREAM), max_request_bytes=1_000)
    with ReplayServer(app) as server, httpx2.Client(base_url=server.url, timeout=30) as http:
        declared = http.post("/v1/responses", content=b"x" * 1_001)
        counted = http.post("/v1/responses", content=iter([b"x" * 600, b"x" * 600]))
    for refused in (declared, counted):
        assert refused.status_code == 413
        assert "limit of 1000 bytes" in refused.json()["error"]["message"]
    assert app.status()["played"] == 0


def test_stalled_bodies_and_heads_are_cut_off() -> None:
    from recorder.http_limits import ServerLimits

    app = ReplayApp(load_tape(STREAM), body_timeout=0.5)
    limits = ServerLimits(header_timeout=0.5, max_connections=2)
    with ReplayServer(app, limits=limits) as server:
        address = ("127.0.0.1", server.port)
        with socket.create_connection(address, timeout=30) as stalled:
            stalled.sendall(
                b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nab"
            )
            assert stalled.recv(100).startswith(b"HTTP/1.1 408")
        with socket.create_connection(address, timeout=30) as headless:
            headless.sendall(b"POST /v1/responses HTTP/1.1\r\n")
            assert headless.recv(100) == b""  # closed (the 30 s only keeps a failure from hanging)
        held = [socket.create_connection(address, timeout=30) for _ in range(2)]
        try:
            with socket.create_connection(address, timeout=30) as surplus:
                assert surplus.recv(100).startswith(b"HTTP/1.1 503")
        finally:
            for s in held:
                s.close()


def _cut(tmp_path: Path) -> Path:
    """STREAM cut at a line boundary: every line parses, the exchange never ends."""
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(STREAM.read_text().splitlines(keepends=True)[:100]))
    return cut


CUT_SHORT = (
    "is cut short: session 'openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming' is "
    "never closed; exchange #1 (POST https://api.openai.com/v1/responses) never ended"
)


def test_cli_serve_refuses_an_empty_or_cut_tape_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    cut = _cut(tmp_path)
    for tape, line in (
        (empty, f"Error: {empty}: the file is empty"),
        (
            cut,
            f"Error: {cut} {CUT_SHORT}. Replay or compare it anyway with --partial (it then "
            "ends where the tape does)",
        ),
    ):
        result = subprocess.run(
            [_codetape(), "serve", str(tape), "--listen", "127.0.0.1:0"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert (result.returncode, result.stderr) == (1, line + "\n"), result.stdout
        assert result.stdout == ""


def test_cli_serve_partial_serves_a_cut_tape_with_a_warning(tmp_path: Path) -> None:
    cut = _cut(tmp_path)
    proc = subprocess.Popen(
        [_codetape(), "serve", str(cut), "--partial", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("codetape: replaying 1 exchanges from ")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.splitlines()[0] == f"warning: {cut} {CUT_SHORT}; using what it holds (--partial)"


def test_replay_transport_refuses_a_cut_tape_unless_loaded_partial(tmp_path: Path) -> None:
    from recorder.errors import TapeError
    from replay import ReplayTransport

    cut = _cut(tmp_path)
    with pytest.raises(TapeError, match="is cut short"):
        ReplayTransport(cut)
    recording = load_tape(cut, partial=True)
    assert recording.cut is not None and recording.cut.startswith("cut short: session")
    ReplayTransport(recording).close()
    assert load_tape(STREAM).cut is None

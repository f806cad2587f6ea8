"""`codetape demo`: the real SDK records the bundled tape through the recorder, from a replay.

No key, no network, embedded SQLite by default, re-runnable; both backends.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from click.testing import CliRunner
from wheel_venv import WheelVenv

from recorder import projections as P
from recorder.cli import main
from recorder.config import default_sqlite_path
from recorder.demo import (
    DEMO_LABELS,
    DEMO_SESSION_NAME,
    SDK_BASE_URL,
    demo_tape_path,
    find_recorded,
    record,
    sse_bytes,
)
from recorder.events import EventKind
from recorder.store import EventStore, migrate
from recorder.tape import read_tape
from replay.transport import ReplayTransport

ROOT = Path(__file__).resolve().parents[1]
TAPE_URL = "https://api.openai.com/v1/responses"
# Whatever could send the SDK or httpx2 elsewhere; the demo must not depend on any of it.
NETWORK_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_CUSTOM_HEADERS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "CODETAPE_DB",
)


class Offline:
    """What the demo's requests met: the replay transports made and the requests they served."""

    def __init__(self) -> None:
        self.replays: list[ReplayTransport] = []
        self.requests: list[httpx2.Request] = []


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Offline]:
    """No network: a real transport or a socket connection fails the test; replays are watched."""
    seen = Offline()

    def no_real_transport(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the demo built a real HTTP transport")

    def no_connection(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the demo opened a network connection")

    monkeypatch.setattr(httpx2.HTTPTransport, "__init__", no_real_transport)
    monkeypatch.setattr(httpx2.AsyncHTTPTransport, "__init__", no_real_transport)
    monkeypatch.setattr(socket.socket, "connect", no_connection)
    monkeypatch.setattr(socket, "create_connection", no_connection)

    init = ReplayTransport.__init__
    handle = ReplayTransport.handle_request

    def watched_init(self: ReplayTransport, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        seen.replays.append(self)

    def watched_handle(self: ReplayTransport, request: httpx2.Request) -> httpx2.Response:
        seen.requests.append(request)
        return handle(self, request)

    monkeypatch.setattr(ReplayTransport, "__init__", watched_init)
    monkeypatch.setattr(ReplayTransport, "handle_request", watched_handle)
    yield seen


@pytest.fixture
def no_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)


def tape_events() -> list[Any]:
    return read_tape(demo_tape_path())


def test_bundled_tape_is_the_fixture_it_claims_to_be() -> None:
    fixture = ROOT / "fixtures/realdata/pydantic-ai"
    name = "test_openai_responses_code_execution_return_image_stream.jsonl"
    assert demo_tape_path().read_bytes() == (fixture / name).read_bytes()


def test_the_sdk_default_base_url_is_the_tapes(no_network_env: None) -> None:
    client = openai.OpenAI(api_key="demo-no-key")
    assert str(client.base_url).rstrip("/") == SDK_BASE_URL
    (request,) = [e for e in tape_events() if e.kind is EventKind.REQUEST]
    assert request.meta["url"] == SDK_BASE_URL + "/responses" == TAPE_URL


def test_demo_records_through_the_sdk_from_the_replay(
    db_url: str, offline: Offline, no_network_env: None
) -> None:
    migrate.upgrade(db_url)
    arrived: list[Any] = []
    with EventStore.open(db_url) as store:
        done = record(store, on_event=arrived.append)
        assert done.new
        assert (done.original_timing, done.pace) == (False, "instant")

        # The SDK really streamed: typed events, one per recorded SSE frame, live.
        tape = tape_events()
        frames = [e for e in tape if e.kind is EventKind.SSE]
        assert len(arrived) == len(frames) == 270
        assert all(type(e).__module__.startswith("openai.types.responses.") for e in arrived)
        assert [e.type for e in arrived] == [f.sse_type for f in frames]

        # ...through the replay only, with the dummy key, to the SDK's default URL.
        (replay,) = offline.replays
        (request,) = offline.requests
        assert str(request.url) == TAPE_URL
        assert request.headers["authorization"] == "Bearer demo-no-key"
        assert request.headers["user-agent"].startswith("OpenAI/Python")
        assert [x.url for x in replay.served] == [TAPE_URL]
        assert replay.unplayed() == [] and replay.forwarded == 0 and replay.fallback is None

        info = store.find_session(done.session_id)
        assert info.name == DEMO_SESSION_NAME
        assert info.labels == DEMO_LABELS == {"demo": "true", "source": "replay"}
        assert info.closed
        assert info.metadata["demo"]["original_timing"] is False
        (x,) = store.exchanges(done.session_id)
        assert (x.method, x.url, x.status, x.outcome) == ("POST", TAPE_URL, 200, "completed")

        events = list(store.session_events(done.session_id))
        # The recorded SSE bytes are the bundled tape's, byte for byte, frame for frame.
        assert sse_bytes(events) == sse_bytes(tape)
        recorded_frames = [e.payload for e in events if e.kind is EventKind.SSE]
        assert recorded_frames == [f.payload for f in frames]
        # The request the SDK built is the recorded one (the SDK orders keys its own way).
        (sent,) = [e for e in events if e.kind is EventKind.REQUEST]
        (taped,) = [e for e in tape if e.kind is EventKind.REQUEST]
        assert json.loads(sent.payload) == json.loads(taped.payload)
        # Arrival times are real now: this replay's (the tape has none).
        assert all(e.offset_ns is None for e in frames)
        assert all(e.offset_ns is not None for e in events if e.kind is EventKind.SSE)

        # The reports the demo shows hold the same numbers as the recording.
        report = P.costs(store, by="session").to_json()
        (item,) = report["exchanges"]
        assert (item["input_tokens"], item["output_tokens"]) == (2772, 1166)
        assert (item["token_cost"], item["token_basis"]) == ("0.015125", "exact")
        (entry,) = P.audit(store, done.session_id)
        assert entry.status == "completed"
        assert "fig.savefig(out_path, dpi=200)" in entry.code
        (stage,) = P.stages(store, done.session_id)
        assert stage.timed and stage.delta_count == 212
        (container,) = [c for c in P.containers(store) if c.session_id == done.session_id]
        assert container.state_at(container.last_activity_ns)[0] == "active"

        # Again: the complete demo session is reused, not recorded twice.
        again = record(store)
        assert (again.session_id, again.new) == (done.session_id, False)
        assert len(store.sessions()) == 1
        assert len(offline.requests) == 1
        assert store.verify().ok


def test_an_interrupted_demo_is_recorded_again(
    sqlite_url: str, offline: Offline, no_network_env: None
) -> None:
    migrate.upgrade(sqlite_url)

    def stop_early(event: Any) -> None:
        if event.type == "response.code_interpreter_call_code.delta":
            raise KeyboardInterrupt

    with EventStore.open(sqlite_url) as store:
        with pytest.raises(KeyboardInterrupt):
            record(store, on_event=stop_early)
        (broken,) = store.sessions()
        assert broken.closed and broken.labels == DEMO_LABELS
        assert find_recorded(store) is None
        done = record(store)
        assert done.new and done.session_id != broken.id
        assert find_recorded(store) is not None
        assert [s.id for s in store.sessions()] == [broken.id, done.session_id]
        assert record(store).session_id == done.session_id


def test_demo_on_the_embedded_database_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: Offline, no_network_env: None
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    first = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert default_sqlite_path().is_file()
    assert str(tmp_path) in str(default_sqlite_path())
    for section in ("recording", "as chunks", "stages", "audit trail", "cost", "containers"):
        assert section in first.output
    assert "recorded session" in first.output
    # The SDK's events, printed as they arrived.
    assert "response.code_interpreter_call_code.delta ×212" in first.output
    assert "response.completed" in first.output
    assert "fig.savefig(out_path, dpi=200)" in first.output
    assert "replay timing" in first.output
    assert "$0.015125" in first.output  # 2772*1.25e-6 + 1166*10e-6
    # The container fee of the original's day (flat $0.03), as the demo explains it.
    assert "$0.045125" in first.output
    # The advisor's line for the session, then the report, written beside the database.
    assert "container advice: 1 container(s) created, none while another" in first.output
    report = default_sqlite_path().parent / "codetape-demo-report.html"
    assert f"wrote {report} (" in first.output.replace("\n", "")
    assert report.read_text(encoding="utf-8").startswith("<!doctype html>")
    second = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "already recorded; reusing" in second.output
    assert "response.completed" not in second.output
    assert "fig.savefig(out_path, dpi=200)" in second.output
    assert len(offline.requests) == 1
    with EventStore.open(None) as store:
        (session,) = store.sessions()
        assert session.name == DEMO_SESSION_NAME
        assert session.labels == DEMO_LABELS
        assert store.verify().ok


def test_demo_with_db(
    migrated_db_url: str,
    offline: Offline,
    no_network_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    report = tmp_path / "out" / "demo.html"
    result = CliRunner().invoke(
        main, ["demo", "--db", migrated_db_url, "--report", str(report)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert report.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert "recorded session" in result.output
    assert "image (89 KB data URL)" in result.output
    assert "active" in result.output
    assert [str(r.url) for r in offline.requests] == [TAPE_URL]
    with EventStore.open(migrated_db_url) as store:
        (session,) = store.sessions()
        assert session.labels == DEMO_LABELS
        assert sse_bytes(store.session_events(session.id)) == sse_bytes(tape_events())


def test_demo_ignores_network_settings(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, offline: Offline
) -> None:
    """A real key, a base URL and proxies in the environment change nothing: still the replay."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-to-be-used")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    migrate.upgrade(sqlite_url)
    result = CliRunner().invoke(main, ["demo", "--db", sqlite_url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (request,) = offline.requests
    assert str(request.url) == TAPE_URL
    assert request.headers["authorization"] == "Bearer demo-no-key"


def test_demo_sets_up_no_database_but_the_embedded_one(
    tmp_path: Path, offline: Offline, no_network_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit database is refused as by every command: not created, not migrated."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    mistyped = f"sqlite:///{tmp_path / 'typo' / 'dir' / 'mistyped.db'}"
    old = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(old, "0004_no_replace")
    for url in (mistyped, old):
        demo = CliRunner().invoke(main, ["demo", "--db", url])
        sessions = CliRunner().invoke(main, ["sessions", "--db", url])
        assert demo.exit_code == sessions.exit_code == 1, demo.output
        assert demo.stderr == sessions.stderr
        assert demo.stderr.startswith("Error: ") and "codetape db upgrade --db" in demo.stderr
    assert not (tmp_path / "typo").exists()
    assert migrate.current_revision(old) == "0004_no_replace"
    assert offline.requests == []


@pytest.mark.slow
def test_demo_runs_from_an_installed_wheel(tmp_path: Path, installed_wheel: WheelVenv) -> None:
    """Run `codetape demo` from the installed wheel (no network)."""
    env = installed_wheel.env(*NETWORK_ENV)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["COLUMNS"] = "100"
    result = subprocess.run(
        [installed_wheel.bin("codetape"), "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "recorded session" in result.stdout
    assert "response.completed" in result.stdout  # the SDK streamed the tape, in the wheel too
    assert "fig.savefig(out_path, dpi=200)" in result.stdout
    assert str(tmp_path / "data") in result.stdout

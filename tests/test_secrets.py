"""No secret is stored: secrets of every kind, planted in real SDK traffic, never reach a file.

An upstream on 127.0.0.1 echoes each request's metadata, instructions and
tools in its response objects, as the Responses API does (``response.created``,
``.in_progress``, ``.completed``, plain JSON bodies, ``retrieve``), and sends
secret response headers. The same traffic is recorded through the SDK (both
writers), through ``codetape proxy`` (a subprocess) and by importing a
test-proxy recording of it; then every file codetape wrote (the SQLite
database and its WAL, an exported tape, log output, the proxy's stdout and
stderr), or every row of every table on PostgreSQL, is searched for each
secret. The redacted recording still replays through the SDK and verifies.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fake_upstream import free_port, read_body, serve

from recorder.capture import CaptureSession
from recorder.cli import main
from recorder.client import record
from recorder.errors import CodetapeError
from recorder.events import Event, EventKind
from recorder.export import export_sessions
from recorder.ingest import file_events, import_file
from recorder.redact import Redactor
from recorder.store import EventStore, codec, migrate
from recorder.tape import write_tape
from recorder.upstream import parse_upstream
from replay import ReplayTransport

# Unique per run, so a leftover from another test can never be mistaken for a leak.
_RUN = uuid.uuid4().hex[:8]
# Spelled in pieces so that secret scanners do not flag this file.
KEY = "sk-" + f"proj-APIKEY{_RUN}"
PASSWORD = f"PASSWORD{_RUN}"
SECRETS = {
    "api key": KEY,
    "x-goog-api-key": f"GOOGKEY{_RUN}",
    "custom api-key header": f"CUSTOMKEY{_RUN}",
    "session token header": f"SESSIONTOKEN{_RUN}",
    "cookie": f"COOKIE{_RUN}",
    "token= query": f"QUERYTOKEN{_RUN}",
    "sig= query": f"QUERYSIG{_RUN}",
    "api_key= query": f"QUERYKEY{_RUN}",
    "userinfo password": PASSWORD,
    "basic auth from userinfo": base64.b64encode(f"alice:{PASSWORD}".encode()).decode(),
    "metadata.user_key": f"USERKEY{_RUN}",
    "response set-cookie": f"SETCOOKIE{_RUN}",
    "response token header": f"UPSTREAMTOKEN{_RUN}",
    # Found by value: names that say nothing of a secret.
    "bearer under a plain name": f"RELAYBEARER{_RUN}",
    "key under a plain name": "sk-" + f"svcacct-RELAYKEY{_RUN}",
    "client certificate": f"CLIENTCERT{_RUN}",
    "key in a plain query value": "sk-" + f"admin-QUERYVALUEKEY{_RUN}",
    "response bearer under a plain name": f"UPSTREAMBEARER{_RUN}",
}
USER_KEY = SECRETS["metadata.user_key"]
HEADERS = {
    "X-Goog-Api-Key": SECRETS["x-goog-api-key"],
    "X-Custom-Api-Key": SECRETS["custom api-key header"],
    "X-Session-Token": SECRETS["session token header"],
    "Cookie": f"sid={SECRETS['cookie']}",
    "X-Relay": f"Bearer {SECRETS['bearer under a plain name']}",
    "X-Origin": SECRETS["key under a plain name"],
    "X-Client-Cert": SECRETS["client certificate"],
}
QUERY = {
    "token": SECRETS["token= query"],
    "sig": SECRETS["sig= query"],
    "api_key": SECRETS["api_key= query"],
    "relay": SECRETS["key in a plain query value"],
}
PATHS = ["metadata.user_key"]
TOOLS = [{"type": "code_interpreter", "container": {"type": "auto"}}]


class EchoAPI:
    """A Responses API that echoes the request in its response objects (ASGI)."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}

    def _response(self, request: dict[str, Any], status: str) -> dict[str, Any]:
        return {
            "id": f"resp_{len(self.stored)}",
            "object": "response",
            "created_at": 1760000000,
            "status": status,
            "model": request.get("model", "m"),
            "instructions": request.get("instructions"),
            "metadata": request.get("metadata", {}),
            "tools": request.get("tools", []),
            "user": None,
            "output": [],
            "usage": None,
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = [
            (b"set-cookie", f"sid={SECRETS['response set-cookie']}; HttpOnly".encode()),
            (b"x-upstream-token", SECRETS["response token header"].encode()),
            (
                b"x-upstream-relay",
                f"Bearer {SECRETS['response bearer under a plain name']}".encode(),
            ),
        ]
        path: str = scope["path"]
        if scope["method"] == "GET" and path.startswith("/v1/responses/"):
            found = self.stored[path.rsplit("/", 1)[1]]
            await _send(send, headers, [json.dumps(found, indent=2).encode()], "application/json")
            return
        request = json.loads(body)
        done = self._response(request, "completed")
        self.stored[done["id"]] = done
        if not request.get("stream"):
            await _send(send, headers, [json.dumps(done, indent=2).encode()], "application/json")
            return
        started = {**done, "status": "in_progress"}
        events = [
            {"type": "response.created", "sequence_number": 0, "response": started},
            {"type": "response.in_progress", "sequence_number": 1, "response": started},
            {"type": "response.output_text.delta", "sequence_number": 2, "delta": "hi"},
            {"type": "response.completed", "sequence_number": 3, "response": done},
        ]
        frames = [
            f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n".encode()
            for e in events
        ]
        if request.get("input") == "cut":
            frames[-1] = frames[-1][:-1]  # the stream stops before the blank line
        await _send(send, headers, frames, "text/event-stream")


async def _send(
    send: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes], ct: str
) -> None:
    head = [*headers, (b"content-type", ct.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def drive(make_client: Callable[..., Any], base: str) -> list[str]:
    """The traffic every route records; returns the stream's event types the SDK saw."""
    seen: list[str] = []
    secret_base = base.replace("://", f"://alice:{PASSWORD}@", 1)
    options = {"default_headers": HEADERS, "default_query": QUERY, "max_retries": 0}
    with make_client(base_url=base, api_key=KEY, **options) as client:
        meta = {"user_key": USER_KEY, "run": "nightly"}
        args = {"model": "m", "tools": TOOLS, "instructions": "be brief", "metadata": meta}
        for event in client.responses.create(input="x", stream=True, **args):
            seen.append(event.type)
            if event.type == "response.completed":
                # Live, the client sees its secret: only the stored copy is redacted.
                assert event.response.metadata == meta
        plain = client.responses.create(input="x", **args)
        assert client.responses.retrieve(plain.id).metadata == meta
        cut = [e.type for e in client.responses.create(input="cut", stream=True, **args)]
        assert cut == ["response.created", "response.in_progress", "response.output_text.delta"]
    with make_client(base_url=secret_base, api_key=KEY, **options) as client:
        client.responses.retrieve(plain.id)
    return seen


def dump_database(url: str) -> dict[str, bytes]:
    """What the database holds: every file of a SQLite database, every row on PostgreSQL,
    and every payload decompressed (a compressed secret would not show in the bytes)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT codec, stored_payload, sse_event, item_id FROM event_rows"
            ).all()
        payloads = {"payloads": b"".join(codec.decode(c, bytes(p), *r) for c, p, *r in rows)}
    finally:
        engine.dispose()
    if url.startswith("sqlite"):
        db_file = Path(sa.make_url(url).database or "")
        files = {p.name: p.read_bytes() for p in db_file.parent.glob(db_file.name + "*")}
        return {**files, **payloads}
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).scalars()
            blobs: dict[str, bytes] = {}
            for table in list(tables):
                rows = conn.exec_driver_sql(f'SELECT * FROM "{table}"').all()
                blobs[table] = repr(rows).encode() + b"".join(
                    bytes(v) for row in rows for v in row if isinstance(v, bytes | memoryview)
                )
            return {**blobs, **payloads}
    finally:
        engine.dispose()


def assert_no_secret(blobs: dict[str, bytes]) -> None:
    assert blobs
    leaks = [
        (where, what)
        for where, blob in blobs.items()
        for what, secret in SECRETS.items()
        if secret.encode() in blob
    ]
    assert leaks == []


def export_tape(url: str, name: str, tmp_path: Path) -> dict[str, bytes]:
    tape = tmp_path / "exported.jsonl"
    with EventStore.open(url) as store:
        export_sessions(store, [name], tape)
    return {tape.name: tape.read_bytes()}


def check_recording(url: str, name: str, tmp_path: Path, *, userinfo: bool) -> None:
    """The recording says what was redacted, verifies, and replays through the SDK."""
    tape = tmp_path / "exported.jsonl"
    with EventStore.open(url) as store:
        assert store.verify().ok
        session = store.find_session(name)
        xs = [store.exchange_events(x.id) for x in store.exchanges(session.id)]
    assert len(xs) == 5
    stream, plain, retrieved, cut, with_userinfo = xs
    # Which stored bytes are no longer the wire's own is recorded, event by event.
    assert stream[0].meta["redacted_paths"] == PATHS
    redacted = [
        e.sse_type
        for e in stream
        if e.kind is EventKind.SSE and e.meta.get("redacted_paths") == PATHS
    ]
    assert redacted == ["response.created", "response.in_progress", "response.completed"]
    assert [
        e.meta.get("redacted_paths") for e in plain + retrieved if e.kind is EventKind.BODY
    ] == [
        PATHS,
        PATHS,
    ]
    # Through the proxy the client sends no user info (it becomes Basic auth).
    assert with_userinfo[0].meta.get("redacted_userinfo", False) is userinfo
    assert "alice" not in with_userinfo[0].meta["url"]
    # The stream cut before its last blank line: stored as it came, marked, and the
    # outcome is what the client saw (no response.completed).
    tail = [e for e in cut if e.kind is EventKind.SSE][-1]
    assert tail.meta == {"redacted_paths": PATHS, "unterminated": True}
    assert tail.sse_type is None and tail.payload.endswith(b"}\n")
    assert cut[-1].meta["outcome"] == "interrupted"
    assert stream[-1].meta["outcome"] == "completed"
    # The SDK parses the redacted frames as it parsed the wire's.
    replay = ReplayTransport(tape)
    http = httpx2.Client(transport=replay)
    with openai.OpenAI(
        api_key="unused", base_url="https://api.openai.com/v1", http_client=http
    ) as c:
        events = list(
            c.responses.create(
                model="m",
                input="x",
                stream=True,
                tools=TOOLS,  # type: ignore[arg-type]
                instructions="be brief",
                metadata={"user_key": USER_KEY, "run": "nightly"},
                extra_query=QUERY,
            )
        )
    assert [e.type for e in events][-1] == "response.completed"
    assert events[-1].response.metadata == {"user_key": "<redacted>", "run": "nightly"}  # type: ignore[union-attr]


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_capture_through_the_sdk_stores_no_secret(
    db_url: str,
    writer: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="codetape")
    migrate.upgrade(db_url)
    upstream = EchoAPI()
    with serve(upstream) as url:
        capture = CaptureSession(db_url, "sdk", writer=writer, redact_json_paths=PATHS)  # type: ignore[arg-type]
        try:

            def make_client(**kw: Any) -> Any:
                return record(db_url, capture, **kw)

            seen = drive(make_client, url + "/v1")
            capture.flush(30)
            during = dump_database(db_url)  # the WAL before any checkpoint
        finally:
            capture.close()
    assert seen[-1] == "response.completed"
    blobs = {**during, **{f"after {k}": v for k, v in dump_database(db_url).items()}}
    blobs |= export_tape(db_url, "sdk", tmp_path)
    out, err = capfd.readouterr()
    # codetape's own log records (the SDK and httpx2 log the URLs they call themselves).
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if r.name.startswith("codetape")
    )
    blobs |= {"log": logged.encode(), "stdout": out.encode(), "stderr": err.encode()}
    assert_no_secret(blobs)
    check_recording(db_url, "sdk", tmp_path, userinfo=True)


def test_proxy_stores_and_prints_no_secret(db_url: str, tmp_path: Path) -> None:
    migrate.upgrade(db_url)
    port = free_port()
    with serve(EchoAPI()) as upstream:
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from recorder.cli import main; main()",
                "proxy",
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                upstream,
                "--session",
                "proxied",
                "--redact-json",
                "metadata.user_key",
                "--db",
                db_url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            for _ in range(3000):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.01)
            drive(openai.OpenAI, f"http://127.0.0.1:{port}/v1")
        finally:
            os.kill(proxy.pid, signal.SIGTERM)
            out, err = proxy.communicate(timeout=60)
    assert proxy.returncode == 0, err
    assert b"recording proxy on" in err
    blobs = {"proxy stdout": out, "proxy stderr": err, **dump_database(db_url)}
    blobs |= export_tape(db_url, "proxied", tmp_path)
    assert_no_secret(blobs)
    check_recording(db_url, "proxied", tmp_path, userinfo=False)


class _Tap(httpx2.BaseTransport):
    """Writes down each raw exchange, as a recording tool would, for the import test."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner
        self.entries: list[dict[str, Any]] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        response = self.inner.handle_request(request)
        content = response.read()
        self.entries.append(
            {
                "RequestUri": str(request.url),
                "RequestMethod": request.method,
                "RequestHeaders": dict(request.headers.items()),
                "RequestBody": body.decode() or None,
                "StatusCode": response.status_code,
                "ResponseHeaders": dict(response.headers.items()),
                "ResponseBody": content.decode(),
            }
        )
        return httpx2.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )

    def close(self) -> None:
        self.inner.close()


def test_import_stores_no_secret(db_url: str, tmp_path: Path) -> None:
    migrate.upgrade(db_url)
    taps: list[_Tap] = []

    def make_client(**kw: Any) -> Any:
        taps.append(_Tap(httpx2.HTTPTransport()))
        return openai.OpenAI(http_client=httpx2.Client(transport=taps[-1]), **kw)

    with serve(EchoAPI()) as url:
        drive(make_client, url + "/v1")
    entries = [entry for tap in taps for entry in tap.entries]
    recording = tmp_path / "SessionRecords" / "Echo" / "secrets.json"
    recording.parent.mkdir(parents=True)
    recording.write_text(json.dumps({"Entries": entries, "Variables": {}}))
    assert SECRETS["userinfo password"] in recording.read_text()
    result = CliRunner().invoke(
        main, ["import", str(recording), "--redact-json", "metadata.user_key", "--db", db_url]
    )
    assert result.exit_code == 0, result.output
    with EventStore.open(db_url) as store:
        [session] = store.sessions()
    blobs = {"cli output": result.output.encode(), **dump_database(db_url)}
    blobs |= export_tape(db_url, session.id, tmp_path)
    assert_no_secret(blobs)
    check_recording(db_url, session.id, tmp_path, userinfo=True)


class _NoRedaction(Redactor):
    """Redacts nothing: writes a tape with every secret in clear, as an old tool might."""

    def header_pairs(self, pairs: Any) -> list[list[str]]:
        return [[k, v] for k, v in pairs]

    def url(self, url: str) -> str:
        return url

    def url_redacted(self, url: str) -> tuple[str, list[str], bool]:
        return url, [], False

    def body(self, body: bytes) -> tuple[bytes, list[str]]:
        return body, []

    def response_body(self, body: bytes) -> tuple[bytes, list[str]]:
        return body, []

    def frame(self, raw: bytes) -> None:
        return None


def test_import_of_a_tape_holding_secrets_stores_none(db_url: str, tmp_path: Path) -> None:
    """A tape from elsewhere (an older codetape, a hand edit) is redacted like any import."""
    migrate.upgrade(db_url)
    taps: list[_Tap] = []

    def make_client(**kw: Any) -> Any:
        taps.append(_Tap(httpx2.HTTPTransport()))
        return openai.OpenAI(http_client=httpx2.Client(transport=taps[-1]), **kw)

    with serve(EchoAPI()) as url:
        drive(make_client, url + "/v1")
    recording = tmp_path / "SessionRecords" / "Echo" / "plain.json"
    recording.parent.mkdir(parents=True)
    entries = [entry for tap in taps for entry in tap.entries]
    recording.write_text(json.dumps({"Entries": entries}))
    _, events = file_events(recording, "testproxy", _NoRedaction())
    tape = tmp_path / "plain.jsonl"
    write_tape(events, tape)
    text = tape.read_text()
    assert [what for what, secret in SECRETS.items() if secret not in text] == []
    with EventStore.open(db_url) as store:
        [(session_id, _)] = import_file(
            store, tape, "tape", Redactor.with_extra(json_paths=PATHS)
        ).sessions
        assert store.verify().ok
    blobs = dump_database(db_url) | export_tape(db_url, session_id, tmp_path)
    assert_no_secret(blobs)


class _Pieces(httpx2.SyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), 65536):
            yield self.data[start : start + 65536]


def test_a_large_json_body_is_held_whole_to_be_redacted(db_url: str) -> None:
    """Bodies over the 256 KiB event size are stored in pieces, which no parser could redact."""
    migrate.upgrade(db_url)
    response = {
        "id": "resp_big",
        "object": "response",
        "status": "completed",
        "created_at": 1,
        "model": "m",
        "output": [
            {
                "type": "message",
                "id": "m1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "x" * 700_000, "annotations": []}],
            }
        ],
        "metadata": {"user_key": USER_KEY},
    }
    body = json.dumps(response, indent=2).encode()

    def handle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, stream=_Pieces(body)
        )

    for name, paths in (("held", PATHS), ("chunked", [])):
        with record(
            db_url,
            name,
            transport=httpx2.MockTransport(handle),
            api_key=KEY,
            max_retries=0,
            redact_json_paths=paths,
        ) as client:
            got = client.responses.create(model="m", input="x", metadata={"user_key": USER_KEY})
            assert got.metadata == {"user_key": USER_KEY}  # the client gets the wire's bytes
    with EventStore.open(db_url) as store:
        bodies = {
            name: [
                e
                for x in store.exchanges(store.find_session(name).id)
                for e in store.exchange_events(x.id)
                if e.kind is EventKind.BODY
            ]
            for name in ("held", "chunked")
        }
    [held] = bodies["held"]
    assert held.payload == body.replace(USER_KEY.encode(), b"<redacted>")
    assert held.meta == {"redacted_paths": PATHS} and held.response_id == "resp_big"
    # Without paths to redact, nothing is held: the body goes in 256 KiB pieces.
    assert len(bodies["chunked"]) == 3
    assert b"".join(e.payload for e in bodies["chunked"]) == body


def test_endpoints_and_settings_in_session_metadata_are_stored_redacted(
    store: EventStore, tmp_path: Path
) -> None:
    """What a user types (an endpoint URL with user info or a key in its query, a token as a
    label) reaches session metadata redacted, from capture and from an old tape alike."""
    endpoint = f"http://alice:{PASSWORD}@127.0.0.1:9/v1?api_key={SECRETS['api_key= query']};a=1"
    redacted = "http://127.0.0.1:9/v1?api_key=%3Credacted%3E;a=1"
    with record(
        store,
        "configured",
        labels={"endpoint": endpoint, "auth": f"Bearer {KEY}"},
        metadata={"client": {"base_url": endpoint, "keys": [KEY], "retries": 2}},
        transport=httpx2.MockTransport(lambda request: httpx2.Response(200, json={})),
        api_key=KEY,
    ):
        pass
    info = store.find_session("configured")
    assert info.labels == {"endpoint": redacted, "auth": "<redacted>"}
    assert info.metadata["client"] == {"base_url": redacted, "keys": ["<redacted>"], "retries": 2}
    # A tape written by an older codetape kept a rerun's endpoint as typed.
    opened = next(e for e in store.session_events(info.id) if e.kind is EventKind.SESSION_OPEN)
    old_meta = {**opened.meta, "metadata": {"rerun": {"upstream": endpoint}}}
    tape = tmp_path / "old.jsonl"
    write_tape(
        [
            Event("0" * 32, EventKind.SESSION_OPEN, 0, recorded_at_ns=1, meta=old_meta),
            Event("0" * 32, EventKind.SESSION_CLOSE, 1, recorded_at_ns=2),
        ],
        tape,
    )
    assert PASSWORD in tape.read_text()
    import_file(store, tape, "tape")
    assert store.find_session("0" * 32).metadata == {"rerun": {"upstream": redacted}}
    assert store.verify().ok
    blobs = dump_database(store.url) | export_tape(store.url, "0" * 32, tmp_path)
    assert_no_secret(blobs)


def test_a_bad_proxy_upstream_is_refused_without_printing_its_secrets() -> None:
    for bad in (
        f"ftp://alice:{PASSWORD}@h/v1",
        f"http://h/v1?token={SECRETS['token= query']}",
    ):
        with pytest.raises(CodetapeError, match="--upstream") as info:
            parse_upstream(bad)
        assert_no_secret({"message": str(info.value).encode()})

"""Live capture through the real openai SDK: bytes, shapes, outcomes, endpoints, redaction.

Every test drives the unpatched ``openai`` client; HTTP goes to a fake upstream
(``httpx2.MockTransport`` serving fixture tapes) and events land in a real
store (SQLite and PostgreSQL through ``db_url``).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import sqlalchemy as sa
from fake_upstream import FIXTURES, Scripted, Upstream, json_response, load_tape, sse_response

from recorder.capture import AsyncRecordingTransport, CaptureSession, RecordingTransport
from recorder.client import record, record_async
from recorder.errors import CodetapeError
from recorder.events import EventKind, StoredEvent
from recorder.export import export_sessions
from recorder.store import EventStore, codec
from recorder.tape import read_tape

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
# A fake key, spelled in pieces so that secret scanners do not flag this file.
KEY = "sk-" + "proj-" + "SECRETKEY0123456789abcdefghij"
BASE = "https://api.openai.com/v1"


def exchanges(store: EventStore, name: str) -> list[list[StoredEvent]]:
    session = store.find_session(name)
    return [store.exchange_events(x.id) for x in store.exchanges(session.id)]


def body_of(events: list[StoredEvent]) -> bytes:
    return b"".join(e.payload for e in events if e.kind in (EventKind.SSE, EventKind.BODY))


def end_of(events: list[StoredEvent]) -> dict[str, Any]:
    assert events[-1].kind is EventKind.EXCHANGE_END
    return events[-1].meta


def client_for(store: EventStore, name: str, upstream: Upstream, **kw: Any) -> Any:
    return record(
        store, name, transport=upstream.transport(), api_key=KEY, base_url=BASE, max_retries=0, **kw
    )


# -- bytes and shapes ---------------------------------------------------------


def test_stream_is_stored_byte_for_byte_in_the_shape_imports_have(store: EventStore) -> None:
    upstream = Upstream(load_tape(CI_STREAM))
    with client_for(store, "ci", upstream) as client:
        received = list(client.responses.create(model="gpt-4o-mini", input="x", stream=True))
    assert received[-1].type == "response.completed"
    [captured] = exchanges(store, "ci")
    assert body_of(captured) == upstream.scripts[0].body
    assert captured[0].payload == upstream.requests[0].content

    # Same shape as the importer gives the same recording (the fixture tape).
    tape = [e for e in read_tape(FIXTURES / CI_STREAM) if e.exchange_id]
    assert [(e.kind, e.seq) for e in captured] == [(e.kind, e.seq) for e in tape]
    for got, want in zip(captured[2:-1], tape[2:-1], strict=True):
        assert (got.payload, got.sse_event, got.sse_type) == (
            want.payload,
            want.sse_event,
            want.sse_type,
        )
        assert (got.sequence_number, got.response_id) == (want.sequence_number, want.response_id)
    assert end_of(captured) == dict(tape[-1].meta) == {"outcome": "completed"}
    head = captured[1].meta
    assert head["status"] == 200 and head["streamed"] is True and head["fidelity"] == "wire"
    assert head["http_version"] == "HTTP/1.1"
    offsets = [e.offset_ns for e in captured]
    assert offsets[0] == 0 and offsets == sorted(offsets)  # type: ignore[type-var]

    report = store.verify()
    assert report.ok and report.open_exchanges == [] and report.capture_gaps == 0
    assert store.find_session("ci").closed


def test_process_writer_records_exactly_what_the_thread_writer_does(store: EventStore) -> None:
    http_error = load_tape("pydantic-ai/test_openai_responses_model_http_error.jsonl")
    for writer in ("thread", "process"):
        upstream = Upstream(load_tape(CI_STREAM) * 2 + http_error, any_path=True)
        with client_for(store, writer, upstream, writer=writer) as client:
            for _ in client.responses.create(model="m", input="x", stream=True):
                pass
            stream = client.responses.create(model="m", input="x", stream=True)
            for n, _ in enumerate(stream):
                if n == 3:
                    break
            stream.close()
            with pytest.raises(openai.BadRequestError):
                client.responses.create(model="m", input="x")

    def shape(name: str) -> list[list[tuple[object, ...]]]:
        return [
            [
                (
                    e.kind,
                    e.seq,
                    e.payload if e.kind is not EventKind.REQUEST else b"",
                    e.sse_type,
                    e.sequence_number,
                    e.response_id,
                    e.meta.get("outcome"),
                    e.meta.get("status"),
                )
                for e in x
            ]
            for x in exchanges(store, name)
        ]

    thread, process = shape("thread"), shape("process")
    assert [x[-1][6] for x in process] == ["completed", "client_closed", "http_error"]
    assert thread[0] == process[0] and thread[2] == process[2]
    assert process[1][:6] == thread[1][:6]  # the early close cuts at a chunk boundary
    assert store.find_session("process").closed and store.verify().ok


def test_async_client_records_responses_stream(store: EventStore) -> None:
    upstream = Upstream(load_tape(CI_STREAM))

    async def run() -> list[str]:
        async with (
            record_async(
                store,
                "async",
                transport=upstream.async_transport(),
                api_key=KEY,
                base_url=BASE,
                max_retries=0,
            ) as client,
            client.responses.stream(model="gpt-4o-mini", input="x") as stream,
        ):
            types = [event.type async for event in stream]
            await stream.get_final_response()
        return types

    types = asyncio.run(run())
    assert types[-1] == "response.completed"
    [captured] = exchanges(store, "async")
    assert body_of(captured) == upstream.scripts[0].body
    assert end_of(captured)["outcome"] == "completed"
    assert store.verify().ok


def test_transport_used_directly_with_an_httpx2_client(store: EventStore) -> None:
    upstream = Upstream([json_response(b'{"object":"list","data":[]}', method="GET", path="/x")])
    transport = RecordingTransport(upstream.transport(), store, session="direct")
    with httpx2.Client(transport=transport) as http:
        assert http.get("https://example.test/x").json() == {"object": "list", "data": []}
    assert store.find_session("direct").closed  # closing the client closed the session
    [captured] = exchanges(store, "direct")
    assert [e.kind for e in captured] == [
        EventKind.REQUEST,
        EventKind.RESPONSE_HEAD,
        EventKind.BODY,
        EventKind.EXCHANGE_END,
    ]


def test_async_transport_shares_one_session(store: EventStore) -> None:
    upstream = Upstream([json_response(b"{}", method="GET", path="/a")] * 2)

    async def run(session: CaptureSession) -> None:
        transport = AsyncRecordingTransport(upstream.async_transport(), session=session)
        async with httpx2.AsyncClient(transport=transport) as http:
            await asyncio.gather(http.get("https://h.test/a"), http.get("https://h.test/a"))

    with CaptureSession(store, "shared") as session:
        asyncio.run(run(session))
        assert session.flush(30)
        assert not store.find_session("shared").closed  # the session outlives the transport
    assert [end_of(x)["outcome"] for x in exchanges(store, "shared")] == ["completed"] * 2


def test_gzip_body_is_stored_decoded_and_reaches_the_sdk_intact(store: EventStore) -> None:
    import gzip

    body = json.dumps({"id": "resp_1", "object": "response", "status": "completed"}).encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        return httpx2.Response(200, headers=headers, content=gzip.compress(body))

    with record(
        store, "gz", transport=httpx2.MockTransport(handler), api_key=KEY, base_url=BASE
    ) as client:
        assert client.responses.retrieve("resp_1").id == "resp_1"
    [captured] = exchanges(store, "gz")
    assert body_of(captured) == body
    assert captured[1].meta["decoded_content_encoding"] == "gzip"
    assert captured[2].response_id == "resp_1"


# -- the SDK's endpoints --------------------------------------------------------


def test_every_sdk_endpoint_is_an_exchange(store: EventStore) -> None:
    download = os.urandom(600 * 1024)  # larger than one BODY chunk
    response = {"id": "resp_bg", "object": "response", "status": "queued", "output": []}
    container = {"id": "cntr_1", "object": "container", "name": "c", "status": "running"}
    cfile = {"id": "cfile_1", "object": "container.file", "container_id": "cntr_1"}
    scripts = [
        json_response(json.dumps(response).encode()),  # background create
        json_response(
            json.dumps({**response, "status": "completed"}).encode(),
            method="GET",
            path="/v1/responses/resp_bg",
        ),
        json_response(
            json.dumps(
                {
                    "id": "file_1",
                    "object": "file",
                    "bytes": 3,
                    "created_at": 1,
                    "filename": "a.csv",
                    "purpose": "user_data",
                    "status": "processed",
                }
            ).encode(),
            path="/v1/files",
        ),
        json_response(json.dumps(container).encode(), path="/v1/containers"),
        json_response(
            json.dumps({"object": "list", "data": [container], "has_more": False}).encode(),
            method="GET",
            path="/v1/containers",
        ),
        json_response(json.dumps(container).encode(), method="GET", path="/v1/containers/cntr_1"),
        json_response(
            json.dumps({"object": "list", "data": [cfile], "has_more": False}).encode(),
            method="GET",
            path="/v1/containers/cntr_1/files",
        ),
        Scripted(
            "GET",
            "/v1/containers/cntr_1/files/cfile_1/content",
            200,
            [("content-type", "application/octet-stream")],
            [download[i : i + 50_000] for i in range(0, len(download), 50_000)],
            False,
        ),
        json_response(
            json.dumps({"id": "cntr_1", "object": "container.deleted", "deleted": True}).encode(),
            method="DELETE",
            path="/v1/containers/cntr_1",
        ),
    ]
    upstream = Upstream(scripts)
    with client_for(store, "endpoints", upstream) as client:
        created = client.responses.create(model="gpt-5", input="x", background=True)
        assert client.responses.retrieve(created.id).status == "completed"
        client.files.create(file=("a.csv", b"1,2", "text/csv"), purpose="user_data")
        made = client.containers.create(name="c")
        assert [c.id for c in client.containers.list()] == ["cntr_1"]
        client.containers.retrieve(made.id)
        assert [f.id for f in client.containers.files.list("cntr_1")] == ["cfile_1"]
        content = client.containers.files.content.retrieve("cfile_1", container_id="cntr_1")
        assert content.read() == download
        client.containers.delete("cntr_1")

    recorded = exchanges(store, "endpoints")
    assert [(x[0].meta["method"], httpx2.URL(x[0].meta["url"]).path) for x in recorded] == [
        (s.method, s.path) for s in scripts
    ]
    for x, script in zip(recorded, scripts, strict=True):
        assert body_of(x) == script.body
        assert end_of(x)["outcome"] == "completed"
    assert recorded[0][2].response_id == "resp_bg"
    assert b'filename="a.csv"' in recorded[2][0].payload  # the multipart upload body
    download_events = [e for e in recorded[7] if e.kind is EventKind.BODY]
    assert len(download_events) == 3  # a large download is several BODY chunks
    assert store.verify().ok


# -- outcomes -------------------------------------------------------------------


def test_http_error_body_is_recorded_as_http_error(store: EventStore) -> None:
    upstream = Upstream(load_tape("pydantic-ai/test_openai_responses_model_http_error.jsonl"))
    with client_for(store, "err", upstream) as client, pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o", input="x", stream=True)
    [captured] = exchanges(store, "err")
    assert captured[1].meta["status"] == 400 and captured[1].meta["streamed"] is False
    assert body_of(captured) == upstream.scripts[0].body
    end = end_of(captured)
    assert end["outcome"] == "http_error" and "temperature" in end["reason"]


def test_streamed_failure_is_failed_even_though_the_sdk_raises(store: EventStore) -> None:
    upstream = Upstream(load_tape("vercel-ai/openai-error.1.jsonl"))
    with client_for(store, "failed", upstream) as client, pytest.raises(openai.APIError):
        for _ in client.responses.create(model="gpt-4o", input="x", stream=True):
            pass
    [captured] = exchanges(store, "failed")
    end = end_of(captured)
    assert end["outcome"] == "failed" and "quota" in end["reason"]
    assert captured[1].meta["status"] == 200


def test_incomplete_response_is_incomplete(store: EventStore) -> None:
    upstream = Upstream(load_tape("openai-dotnet/ResponsesTests/MaxTokens.jsonl"))
    with client_for(store, "inc", upstream) as client:
        assert client.responses.create(model="gpt-4o", input="x").status == "incomplete"
    assert end_of(exchanges(store, "inc")[0])["outcome"] == "incomplete"


def test_streamed_incomplete_and_missing_terminal_event(store: EventStore) -> None:
    frames = [f for f in load_tape(CI_STREAM)[0].chunks if b"response.completed" not in f]
    incomplete = (
        b'event: response.incomplete\ndata: {"type":"response.incomplete","sequence_number":999,'
        b'"response":{"id":"resp_x","object":"response","status":"incomplete",'
        b'"incomplete_details":{"reason":"max_output_tokens"}}}\n\n'
    )
    upstream = Upstream([sse_response([*frames, incomplete]), sse_response(frames)])
    with client_for(store, "cut", upstream) as client:
        for _ in client.responses.create(model="m", input="x", stream=True):
            pass
        for _ in client.responses.create(model="m", input="x", stream=True):
            pass
    first, second = exchanges(store, "cut")
    assert end_of(first) == {"outcome": "incomplete", "reason": "max_output_tokens"}
    assert end_of(second)["outcome"] == "interrupted"


def test_client_breaking_out_and_closing_is_client_closed(store: EventStore) -> None:
    upstream = Upstream(load_tape(CI_STREAM))
    with client_for(store, "break", upstream) as client:
        stream = client.responses.create(model="m", input="x", stream=True)
        for n, _ in enumerate(stream):
            if n == 4:
                break
        stream.close()
    [captured] = exchanges(store, "break")
    assert end_of(captured)["outcome"] == "client_closed"
    sse = [e for e in captured if e.kind is EventKind.SSE]
    assert len(sse) >= 5
    assert body_of(captured) == upstream.scripts[0].body[: len(body_of(captured))]


def test_exception_in_the_clients_loop_is_recorded(store: EventStore) -> None:
    upstream = Upstream(load_tape(CI_STREAM))
    with (
        client_for(store, "raise", upstream) as client,
        pytest.raises(ValueError, match="boom"),
        client.responses.stream(model="m", input="x") as stream,
    ):
        for n, _ in enumerate(stream):
            if n == 2:
                raise ValueError("boom")
    end = end_of(exchanges(store, "raise")[0])
    assert end["outcome"] == "client_closed" and end["error"] == "ValueError"
    assert "boom" in end["reason"]


def test_transport_error_mid_stream(store: EventStore) -> None:
    upstream = Upstream(load_tape(CI_STREAM), fail_at={0: 10})
    with client_for(store, "reset", upstream) as client, pytest.raises(openai.APIConnectionError):
        for _ in client.responses.create(model="m", input="x", stream=True):
            pass
    [captured] = exchanges(store, "reset")
    end = end_of(captured)
    assert end["outcome"] == "transport_error" and end["error"] == "MidStreamError"
    assert len([e for e in captured if e.kind is EventKind.SSE]) == 10


def test_timeout_before_the_response(store: EventStore) -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    with (
        record(
            store,
            "slow",
            transport=httpx2.MockTransport(handler),
            api_key=KEY,
            base_url=BASE,
            max_retries=1,
        ) as client,
        pytest.raises(openai.APITimeoutError),
    ):
        client.responses.create(model="m", input="x")
    recorded = exchanges(store, "slow")
    assert len(recorded) == 2  # the SDK's retry is an exchange of its own
    for x in recorded:
        assert [e.kind for e in x] == [EventKind.REQUEST, EventKind.EXCHANGE_END]
        assert end_of(x)["outcome"] == "transport_error" and end_of(x)["timeout"] is True


def test_session_close_interrupts_a_response_left_open(store: EventStore) -> None:
    upstream = Upstream(load_tape(CI_STREAM))
    with client_for(store, "left", upstream) as client:
        stream = client.responses.create(model="m", input="x", stream=True)
        next(iter(stream))
        client.close()  # the SDK never finished reading: httpx2 closes the response
    end = end_of(exchanges(store, "left")[0])
    assert end["outcome"] in ("client_closed", "interrupted")
    assert store.verify().open_exchanges == []


# -- tee, not buffer --------------------------------------------------------------


def test_sdk_gets_event_k_before_the_server_sends_event_k_plus_1(store: EventStore) -> None:
    received: list[str] = []
    violations: list[int] = []

    def before_frame(_exchange: int, k: int) -> None:
        # Frame k may only be sent once the SDK has handed the user event k-1.
        if k > 0 and len(received) < k:
            violations.append(k)

    upstream = Upstream(load_tape(CI_STREAM), before_frame=before_frame)
    with client_for(store, "tee", upstream) as client:
        for event in client.responses.create(model="m", input="x", stream=True):
            received.append(event.type)
    assert violations == []
    assert len(received) == 491


def test_time_to_first_event_over_a_real_socket(store: EventStore) -> None:
    from fake_upstream import serve

    first_event = __import__("threading").Event()
    held: list[bool] = []

    def before_frame(_exchange: int, k: int) -> None:
        if k == 1:
            # The server holds frame 1 until the SDK has event 0: a buffering
            # recorder would never deliver it, and this wait would time out.
            held.append(first_event.wait(30))

    upstream = Upstream(load_tape(CI_STREAM), before_frame=before_frame)
    with (
        serve(upstream) as url,
        record(store, "socket", api_key=KEY, base_url=url + "/v1", max_retries=0) as client,
    ):
        for event in client.responses.create(model="m", input="x", stream=True):
            first_event.set()
            last = event
    assert held == [True]
    assert last.type == "response.completed"
    [captured] = exchanges(store, "socket")
    assert body_of(captured) == upstream.scripts[0].body


# -- redaction ------------------------------------------------------------------------


def test_secrets_never_reach_the_database_or_a_tape(
    store: EventStore, db_url: str, tmp_path: Path
) -> None:
    upstream = Upstream(load_tape(CI_STREAM))
    with record(
        store,
        "secret",
        transport=upstream.transport(),
        api_key=KEY,
        base_url=BASE,
        organization="org-SECRETORG",
        project="proj_SECRETPROJ",
        default_headers={"X-Team-Token": "tok-SECRETTEAM", "Cookie": "sid=SECRETCOOKIE"},
        redact_headers=["x-team-token"],
        redact_json_paths=["metadata.user"],
    ) as client:
        for _ in client.responses.create(
            model="m", input="x", stream=True, metadata={"user": "SECRETUSER"}
        ):
            pass
    secrets = [KEY, "SECRETORG", "SECRETPROJ", "SECRETTEAM", "SECRETCOOKIE", "SECRETUSER"]
    assert any(s.encode() in upstream.requests[0].content for s in secrets)  # it was sent
    tape = tmp_path / "out.jsonl"
    export_sessions(store, ["secret"], tape)
    dumps = [tape.read_bytes()]
    # Every stored row as it reads back (payloads decompressed: a compressed
    # secret would not show in the file's bytes), and on SQLite the files too.
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT meta, codec, stored_payload, sse_event, item_id FROM event_rows"
        ).all()
    dumps += [row[0].encode() + codec.decode(row[1], bytes(row[2]), *row[3:]) for row in rows]
    if db_url.startswith("sqlite"):
        store.close()  # checkpoint the WAL; read the main file and any WAL left
        db_file = Path(sa.make_url(db_url).database or "")
        dumps += [p.read_bytes() for p in db_file.parent.glob(db_file.name + "*")]
    for blob in dumps:
        for secret in secrets:
            assert secret.encode() not in blob, secret
    assert b"<redacted>" in dumps[0]


def test_bad_store_error_mode_is_one_line_error(store: EventStore) -> None:
    with pytest.raises(CodetapeError, match="on_store_error must be one of log, raise"):
        CaptureSession(store, "x", on_store_error="ignore")  # type: ignore[arg-type]


def _frames(count: int) -> list[bytes]:
    return [
        b'event: a\ndata: {"type":"a","sequence_number":%d,"x":1}\n\n' % n for n in range(count)
    ]


def test_async_path_hands_each_chunk_on_before_the_recorder_looks_at_it(
    store: EventStore,
) -> None:
    upstream = Upstream([sse_response(_frames(5))])
    received: list[bytes] = []
    had_when_recorded: list[int] = []

    async def run(session: CaptureSession) -> None:
        submit = session.sink.submit

        def spy(event: Any) -> bool:
            if event.kind is EventKind.SSE:
                had_when_recorded.append(len(received))
            return submit(event)

        session.sink.submit = spy  # type: ignore[method-assign]
        transport = AsyncRecordingTransport(upstream.async_transport(), session=session)
        async with (
            httpx2.AsyncClient(transport=transport) as http,
            http.stream("POST", BASE + "/responses") as response,
        ):
            async for chunk in response.aiter_raw():
                received.append(chunk)

    with CaptureSession(store, "relay-first") as session:
        asyncio.run(run(session))
    # Frame k was recorded once the consumer had it: the relay never waits for the recorder.
    assert had_when_recorded == [1, 2, 3, 4, 5]
    [x] = exchanges(store, "relay-first")
    assert b"".join(e.payload for e in x if e.kind is EventKind.SSE) == b"".join(received)


def test_async_path_records_a_chunk_handed_on_when_the_consumer_stops_right_after(
    store: EventStore,
) -> None:
    upstream = Upstream([sse_response(_frames(5))])

    async def run(session: CaptureSession) -> bytes:
        transport = AsyncRecordingTransport(upstream.async_transport(), session=session)
        async with (
            httpx2.AsyncClient(transport=transport) as http,
            http.stream("POST", BASE + "/responses") as response,
        ):
            async for chunk in response.aiter_raw():
                return chunk
        raise AssertionError("no chunk")

    with CaptureSession(store, "stops") as session:
        first = asyncio.run(run(session))
    [x] = exchanges(store, "stops")
    assert [e.payload for e in x if e.kind is EventKind.SSE] == [first]
    assert end_of(x)["outcome"] == "client_closed"

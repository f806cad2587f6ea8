"""The importers against the real recordings in ``shared/realdata`` and bad input.

SSE frames are counted here independently of the importers: from the body by
splitting it into blank-line-terminated frames, and from each source file by
its own means (lines of a chunks file, ``event:`` pieces of a test-proxy
array, ``event:`` lines of a VCR literal block read without a YAML parser).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from recorder.importers import chunks, testproxy, vcr
from recorder.importers.detect import ImportFormatError, detect_format, load_any
from recorder.importers.model import RecordedSession


def _realdata() -> Path | None:
    env = os.environ.get("CODETAPE_REALDATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "realdata"
    return root if root.is_dir() else None


REALDATA = _realdata()
FILES = sorted(p for p in REALDATA.glob("*/*") if p.is_file()) if REALDATA else []
needs_realdata = pytest.mark.skipif(REALDATA is None, reason="shared/realdata not found")


def _short(path: Path) -> str:
    return path.name.rsplit("__", 1)[-1]


def _file(short: str) -> Path:
    for path in FILES:
        if _short(path) == short:
            return path
    pytest.skip(f"{short} not in realdata")


def _load_one(short: str) -> RecordedSession:
    sessions = load_any(_file(short))
    assert len(sessions) == 1
    return sessions[0]


# Per file: one entry per exchange, the number of SSE events if streamed, else None.
EXPECTED: dict[str, list[int | None]] = {
    "MaxTokens.json": [None],
    "StreamingResponses.json": [17],
    "CodeInterpreterToolStreaming.json": [491],
    "CodeInterpreterToolStreamingWithFiles.json": [None, 322],
    "CodeInterpreterToolWithContainerIdFromContainerApi.json": [None, None, None],
    "CodeInterpreterToolWithEmptyFileIds.json": [None],
    "CodeInterpreterToolWithUploadedFileIds.json": [None, None, None],
    "CodeInterpreterToolWithoutFileIds.json": [None],
    "test_openai_responses_code_execution_download_file.yaml": [None, None],
    "test_openai_responses_code_execution_download_file_stream.yaml": [110, None],
    "test_openai_responses_code_execution_return_image.yaml": [None, None],
    "test_openai_responses_code_execution_return_image_stream.yaml": [270],
    "test_openai_responses_model_http_error.yaml": [None],
    "test_openai_responses_stream.yaml": [11, 15],
    "test_openai_responses_streaming_usage.yaml": [14],
    "test_openai_responses_thinking_with_code_execution_tool.yaml": [None, None],
    "test_openai_responses_thinking_with_code_execution_tool_stream.yaml": [365],
    "azure-code-interpreter-tool.1.json": [None],
    "azure-text.1.chunks.txt": [9],
    "azure-text.1.json": [None],
    "openai-code-interpreter-tool.1.chunks.txt": [393],
    "openai-code-interpreter-tool.1.json": [None],
    "openai-error.1.chunks.txt": [4],
    "openai-error.1.json": [None],
}

# The counts SOURCES.md states in words.
SOURCES_MD_COUNTS = {
    "test_openai_responses_code_execution_return_image_stream.yaml": 270,
    "test_openai_responses_thinking_with_code_execution_tool_stream.yaml": 365,
    "test_openai_responses_code_execution_download_file_stream.yaml": 110,
    "openai-code-interpreter-tool.1.chunks.txt": 393,
    "CodeInterpreterToolStreaming.json": 491,
}

_FRAME = re.compile(rb"(?:[^\n]+\n)+\n")


def _frames(body: bytes) -> list[bytes]:
    """Blank-line-terminated frames; asserts they tile the whole body."""
    frames = [m.group(0) for m in _FRAME.finditer(body)]
    assert b"".join(frames) == body, "the body is not a sequence of whole SSE frames"
    return frames


def _vcr_blocks(raw: str) -> list[str]:
    """The ``string: |+`` literal blocks of a cassette, read without a YAML parser."""
    lines = raw.split("\n")
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^( *)string: \|\+$", lines[i])
        i += 1
        if not m:
            continue
        indent = " " * (len(m.group(1)) + 2)
        block: list[str] = []
        while i < len(lines) and (lines[i] == "" or lines[i].startswith(indent)):
            block.append(lines[i][len(indent) :])
            i += 1
        blocks.append("".join(line + "\n" for line in block))
    return blocks


def _source_counts(path: Path) -> list[int]:
    """Per streamed exchange, the event count the source file itself shows."""
    raw = path.read_text(encoding="utf-8")
    if path.name.endswith(".chunks.txt"):
        return [sum(1 for line in raw.split("\n") if line.strip())]
    if path.suffix == ".yaml":
        return [
            sum(1 for line in block.split("\n") if line.startswith("event: "))
            for block in _vcr_blocks(raw)
        ]
    doc = json.loads(raw)
    return [
        sum(1 for piece in entry["ResponseBody"] if piece.startswith("event: "))
        for entry in doc["Entries"]
        if isinstance(entry["ResponseBody"], list)
        and entry["ResponseHeaders"].get("Content-Type", "").startswith("text/event-stream")
    ]


# ------------------------------------------------------------------ real data


@needs_realdata
def test_every_realdata_file_is_expected() -> None:
    assert sorted(_short(p) for p in FILES) == sorted(EXPECTED)


@needs_realdata
@pytest.mark.parametrize("path", FILES, ids=_short)
def test_realdata_file_imports(path: Path) -> None:
    fmt = detect_format(path)
    assert fmt in ("vcr", "chunks", "testproxy")
    sessions = load_any(path)
    assert len(sessions) == 1
    session = sessions[0]
    assert session.labels == {"source": fmt}
    assert session.source["format"] == fmt
    assert session.source["path"] == path.name
    owner, repo = path.parent.name.split("__", 1)
    assert session.source["repo"] == f"{owner}/{repo}"
    all_wire = all(x.fidelity == "wire" for x in session.exchanges)
    assert session.source["fidelity"] == ("wire" if all_wire else "reserialized")
    assert "/" in session.name and session.name.split("/", 1)[1]

    expected = EXPECTED[_short(path)]
    assert len(session.exchanges) == len(expected)
    for exchange, events in zip(session.exchanges, expected, strict=True):
        assert exchange.streamed == (events is not None)
        assert exchange.method in ("GET", "POST", "DELETE")
        assert exchange.url.startswith("https://")
        assert isinstance(exchange.status, int)
        if events is not None:
            frames = _frames(exchange.response_body)
            assert len(frames) == events
            # Data JSON never holds a raw newline, so counting blank lines is enough.
            assert exchange.response_body.count(b"\n\n") == events
            for frame in frames:
                assert frame.startswith(b"event: ")
                assert b"\ndata: {" in frame


@needs_realdata
@pytest.mark.parametrize("path", FILES, ids=_short)
def test_stream_counts_match_the_source(path: Path) -> None:
    exchanges = load_any(path)[0].exchanges
    ours = [len(_frames(x.response_body)) for x in exchanges if x.streamed]
    vercel_body = path.suffix == ".json" and detect_format(path) == "chunks"
    assert ours == ([] if vercel_body else _source_counts(path))


@needs_realdata
@pytest.mark.parametrize("short", sorted(SOURCES_MD_COUNTS))
def test_stream_counts_match_sources_md(short: str) -> None:
    session = _load_one(short)
    (stream,) = [x for x in session.exchanges if x.streamed]
    assert len(_frames(stream.response_body)) == SOURCES_MD_COUNTS[short]


@needs_realdata
@pytest.mark.parametrize("path", FILES, ids=_short)
def test_wire_bodies_match_content_length(path: Path) -> None:
    """Where a wire body has a Content-Length (and no encoding), the lengths agree."""

    def length(headers: list[tuple[str, str]]) -> int | None:
        names = {k.lower(): v for k, v in headers}
        if "content-encoding" in names or "content-length" not in names:
            return None
        return int(names["content-length"])

    for x in load_any(path)[0].exchanges:
        if x.request_fidelity == "wire" and (n := length(x.request_headers)) is not None:
            assert len(x.request_body) == n
        if x.fidelity == "wire" and (n := length(x.response_headers)) is not None:
            assert len(x.response_body) == n


@needs_realdata
def test_vcr_sse_body_is_the_literal_block_byte_for_byte() -> None:
    for path in FILES:
        if path.suffix != ".yaml":
            continue
        raw = path.read_text(encoding="utf-8")
        streamed = [x.response_body for x in vcr.load(path)[0].exchanges if x.streamed]
        assert streamed == [block.encode("utf-8") for block in _vcr_blocks(raw)]
        for body in streamed:
            assert body.endswith(b"}\n\n")
            assert body.startswith(b"event: response.created\n")


@needs_realdata
def test_vcr_http_error() -> None:
    session = _load_one("test_openai_responses_model_http_error.yaml")
    (x,) = session.exchanges
    assert x.status == 400
    assert not x.streamed
    assert x.fidelity == "reserialized"
    assert ("content-type", "application/json") in x.response_headers
    assert json.loads(x.response_body)["error"]["code"] == "decimal_below_min_value"
    assert json.loads(x.request_body)["stream"] is True
    assert b", " not in x.request_body  # compact
    assert session.name == "pydantic-ai/test_openai_responses_model_http_error"


@needs_realdata
def test_vcr_download_file_csv_and_multi_valued_headers() -> None:
    session = _load_one("test_openai_responses_code_execution_download_file_stream.yaml")
    stream, download = session.exchanges
    assert stream.streamed and stream.fidelity == "wire"
    assert stream.request_fidelity == "reserialized"
    assert download.method == "GET"
    assert download.url.endswith("/content")
    assert download.response_body == b"number,square\r\n1,1\r\n2,4\r\n3,9\r\n4,16\r\n5,25\r\n"
    assert download.fidelity == "wire" and not download.streamed
    assert download.request_body == b"" and download.request_fidelity == "wire"
    exposed = [v for k, v in download.response_headers if k == "access-control-expose-headers"]
    assert exposed == ["X-Request-ID", "CF-Ray", "CF-Ray"]
    assert session.source["fidelity"] == "wire"


@needs_realdata
def test_session_names() -> None:
    assert _load_one("test_openai_responses_stream.yaml").name == (
        "pydantic-ai/test_openai_responses_stream"
    )
    assert _load_one("CodeInterpreterToolStreaming.json").name == (
        "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming"
    )
    assert _load_one("openai-code-interpreter-tool.1.chunks.txt").name == (
        "vercel-ai/openai-code-interpreter-tool.1"
    )
    assert _load_one("openai-code-interpreter-tool.1.json").name == (
        "vercel-ai/openai-code-interpreter-tool.1.json"
    )
    names = [s.name for p in FILES for s in load_any(p)]
    assert len(names) == len(set(names))


@needs_realdata
def test_chunks_stream_is_rebuilt_one_frame_per_line() -> None:
    path = _file("openai-error.1.chunks.txt")
    session = chunks.load(path)[0]
    (x,) = session.exchanges
    lines = [line for line in path.read_text().split("\n") if line.strip()]
    frames = _frames(x.response_body)
    for line, frame in zip(lines, frames, strict=True):
        kind = json.loads(line)["type"]
        assert frame == f"event: {kind}\ndata: {line}\n\n".encode()
    assert [json.loads(line)["type"] for line in lines][-2:] == ["error", "response.failed"]
    assert (x.method, x.url, x.status) == ("POST", "https://api.openai.com/v1/responses", 200)
    assert x.request_body == b"" and x.request_fidelity == "reserialized"
    assert x.fidelity == "reserialized" and x.streamed
    assert ("content-type", "text/event-stream") in x.response_headers
    assert session.metadata["request_known"] is False


@needs_realdata
def test_chunks_json_is_its_own_recording_with_the_file_bytes() -> None:
    path = _file("openai-code-interpreter-tool.1.json")
    session = chunks.load(path)[0]
    (x,) = session.exchanges
    assert x.response_body == path.read_bytes()
    assert not x.streamed and x.fidelity == "reserialized" and x.status == 200
    assert session.metadata["request_known"] is False
    stream = chunks.load(_file("openai-code-interpreter-tool.1.chunks.txt"))[0]
    response_id = json.loads(x.response_body)["id"]
    assert response_id.encode() not in stream.exchanges[0].response_body


@needs_realdata
def test_testproxy_bodies() -> None:
    session = _load_one("CodeInterpreterToolStreamingWithFiles.json")
    upload, stream = session.exchanges
    # A multipart upload: pieces joined, the "b64:" piece decoded to the file's bytes.
    assert upload.request_fidelity == "wire"
    assert b"\r\n\r\nx,y\n1,2\n2,4\n3,6\n4,8\n5,10\r\n" in upload.request_body
    assert b"b64:" not in upload.request_body
    assert upload.fidelity == "reserialized"
    assert json.loads(upload.response_body)["purpose"] == "assistants"
    # A repeated response header is kept as one pair per value.
    assert [v for k, v in upload.response_headers if k == "Set-Cookie"] == [
        "Sanitized",
        "Sanitized",
    ]
    assert stream.streamed and stream.fidelity == "wire"
    assert stream.request_fidelity == "reserialized"
    assert session.source["fidelity"] == "reserialized"

    delete = _load_one("CodeInterpreterToolWithContainerIdFromContainerApi.json").exchanges[2]
    assert delete.method == "DELETE"
    assert delete.request_body == b"" and delete.request_fidelity == "wire"
    assert json.loads(delete.response_body)["deleted"] is True


# ------------------------------------------------------------------ bad input


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _assert_one_line_error(exc: pytest.ExceptionInfo[ImportFormatError], name: str) -> None:
    message = str(exc.value)
    assert name in message
    assert "\n" not in message
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    ("name", "text", "fmt", "problem"),
    [
        ("bad.yaml", "interactions:\n- request: {method: [\n", "auto", "not valid YAML"),
        ("none.yaml", "version: 1\nfoo: []\n", "vcr", "no top-level 'interactions'"),
        ("list.yaml", "interactions: {a: 1}\n", "auto", "not a list"),
        (
            "nouri.yaml",
            "interactions:\n- request: {method: GET, headers: {}}\n"
            "  response: {status: {code: 200}, headers: {}, body: {string: ''}}\n",
            "auto",
            "no 'uri'",
        ),
        (
            "nostatus.yaml",
            "interactions:\n- request: {method: GET, uri: 'https://x/'}\n"
            "  response: {headers: {}, body: {string: ''}}\n",
            "auto",
            "status.code",
        ),
        ("noentries.json", '{"Variables": {}}', "testproxy", "no 'Entries'"),
        ("badjson.json", '{"Entries": [', "testproxy", "not valid JSON"),
        (
            "nostatus.json",
            '{"Entries": [{"RequestUri": "https://x/", "RequestMethod": "GET"}]}',
            "auto",
            "StatusCode",
        ),
        ("bad.chunks.txt", '{"type": "response.created"}\nnot json\n', "auto", "line 2"),
        ("notype.chunks.txt", '{"type": "a"}\n[1, 2]\n', "auto", "line 2"),
        ("other.json", '{"hello": "world"}', "chunks", "neither"),
        ("empty.chunks.txt", "\n\n", "chunks", "empty"),
    ],
)
def test_malformed_input_raises_import_format_error(
    tmp_path: Path, name: str, text: str, fmt: str, problem: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(ImportFormatError) as exc:
        load_any(path, fmt)
    _assert_one_line_error(exc, name)
    assert problem in str(exc.value)


def test_each_loader_rejects_bad_input_directly(tmp_path: Path) -> None:
    yaml_path = _write(tmp_path, "x.yaml", "a: [\n")
    json_path = _write(tmp_path, "x.json", "{")
    chunks_path = _write(tmp_path, "x.chunks.txt", "nope\n")
    for loader, path in (
        (vcr.load, yaml_path),
        (testproxy.load, json_path),
        (chunks.load, chunks_path),
    ):
        with pytest.raises(ImportFormatError) as exc:
            loader(path)
        _assert_one_line_error(exc, path.name)
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes(b"interactions: []\n# caf\xe9\n")
    with pytest.raises(ImportFormatError, match="not UTF-8"):
        vcr.load(not_utf8)


@pytest.mark.parametrize(
    "content",
    [
        b"hello, this is just some text\nand more\n",
        b"",
        bytes(range(256)) * 8,
        b"[1, 2, 3]\n",
        b'{"some": "json"}\n',
        b'{\n  "unrelated": [1, 2]\n}\n',
        b"key: value\nother: 2\n",
    ],
    ids=["text", "empty", "binary", "array", "json-line", "json-doc", "yaml"],
)
def test_detect_format_rejects_what_it_cannot_tell(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "mystery.dat"
    path.write_bytes(content)
    with pytest.raises(ImportFormatError) as exc:
        detect_format(path)
    _assert_one_line_error(exc, "mystery.dat")
    if content:
        assert "cannot tell the format of mystery.dat" in str(exc.value)
    else:  # the line every tape reader gives for an empty file
        assert str(exc.value) == f"{path}: the file is empty"


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        ('{"kind": "session_open", "seq": 0}\n{"kind": "request"}\n', "tape"),
        ('{"codetape": 1, "name": "x"}\n', "tape"),
        ('{"type": "response.created", "sequence_number": 0}\n{"type": "x"}\n', "chunks"),
        ('{"id": "resp_1", "object": "response", "output": []}', "chunks"),
        ('{\n  "error": {\n    "message": "quota"\n  }\n}\n', "chunks"),
        ('{"Entries": [], "Variables": {}}', "testproxy"),
        ('{\n  "Variables": {},\n  "Entries": []\n}\n', "testproxy"),
        ("version: 1\ninteractions: []\n", "vcr"),
        ("\ufeffinteractions:\n- request: {}\n", "vcr"),
    ],
)
def test_detect_format_by_content(tmp_path: Path, content: str, fmt: str) -> None:
    assert detect_format(_write(tmp_path, "recording.bin", content)) == fmt


def test_load_any_refuses_tapes_and_unknown_formats(tmp_path: Path) -> None:
    tape = _write(tmp_path, "t.jsonl", '{"kind": "session_open"}\n')
    with pytest.raises(ImportFormatError, match="already a codetape tape"):
        load_any(tape)
    with pytest.raises(ImportFormatError, match="unknown import format 'har'"):
        load_any(tape, "har")
    with pytest.raises(ImportFormatError, match="cannot read"):
        load_any(tmp_path / "missing.yaml")


def test_small_files_outside_a_repo_dir(tmp_path: Path) -> None:
    cassette = _write(
        tmp_path,
        "my_cassette.yaml",
        "interactions:\n"
        "- request:\n"
        "    body: null\n"
        "    headers: {accept: [text/event-stream]}\n"
        "    method: post\n"
        "    uri: https://api.openai.com/v1/responses\n"
        "  response:\n"
        "    body:\n"
        "      string: !!binary ZGF0YTogeyJ0eXBlIjoieCJ9Cgo=\n"
        "    headers: {}\n"
        "    status: {code: 200, message: OK}\n"
        "version: 1\n",
    )
    (session,) = load_any(cassette)
    assert session.name == "my_cassette"
    assert "repo" not in session.source
    (x,) = session.exchanges
    assert x.method == "POST"
    assert x.response_body == b'data: {"type":"x"}\n\n'
    assert x.streamed and x.fidelity == "wire"
    assert session.source == {"format": "vcr", "path": "my_cassette.yaml", "fidelity": "wire"}

    proxy = _write(
        tmp_path,
        "Plain.json",
        json.dumps(
            {
                "Entries": [
                    {
                        "RequestUri": "https://api.openai.com/v1/responses",
                        "RequestMethod": "POST",
                        "RequestHeaders": {},
                        "RequestBody": "raw text",
                        "StatusCode": 200,
                        "ResponseHeaders": {"Content-Type": "application/json"},
                        "ResponseBody": [{"a": 1.0}],
                    }
                ]
            }
        ),
    )
    (x,) = load_any(proxy)[0].exchanges
    assert x.request_body == b"raw text" and x.request_fidelity == "wire"
    assert x.response_body == b'[{"a":1.0}]' and x.fidelity == "reserialized"
    assert not x.streamed

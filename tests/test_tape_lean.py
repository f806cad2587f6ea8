"""Tape format 2 (lean lines) and compressed tapes (``.jsonl.zst``), read by every reader.

Format 1 is still read and written byte for byte (tests/test_tape.py, whose
fixtures are format 1 tapes); here: format 2 reads back every event exactly,
leaves out what earlier lines imply, and a ``.zst`` tape works wherever a
plain one does: import, replay, the pytest plugin, serve, diff and verify.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from recorder.cli import main
from recorder.errors import TapeError
from recorder.events import Event, EventKind, new_id
from recorder.export import export_sessions
from recorder.importers.detect import detect_format
from recorder.ingest import import_file
from recorder.integrity import (
    create_checkpoint,
    load_private_key,
    load_public_key,
    verify_tape,
    write_key_pair,
)
from recorder.store import EventStore
from recorder.tape import read_tape, write_tape, write_tape_to
from recorder.tape_file import ZSTD_MAGIC
from replay import ReplayTransport, load_tape
from replay.reissue import reissue
from replay.server import ReplayApp, ReplayServer

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT / "fixtures" / "realdata"
TAPES = sorted(REALDATA.rglob("*.jsonl"))
STREAM = REALDATA / "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
NAME = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming"


def lean_text(events: list[Event]) -> str:
    out = io.StringIO()
    write_tape_to(events, out)
    return out.getvalue()


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# -- format 2 ---------------------------------------------------------------------------------


def test_every_fixture_reads_back_exactly_from_format_2(tmp_path: Path) -> None:
    for tape in TAPES:
        events = read_tape(tape)
        lean = tmp_path / tape.name
        write_tape(events, lean)
        assert read_tape(lean) == events, tape
        assert lean.read_text().count("\n") == len(events)  # one line per event
        assert lean.stat().st_size < tape.stat().st_size


def test_a_streamed_frame_is_its_data_alone() -> None:
    events = read_tape(STREAM)
    lines = [json.loads(line) for line in lean_text(events).splitlines()]
    frames = [
        (ev, line) for ev, line in zip(events, lines, strict=True) if ev.kind is EventKind.SSE
    ]
    bare = [line for _, line in frames if set(line) == {"data"}]
    # Only the first frame (kind, response_id) says more than its data.
    assert len(bare) == len(frames) - 1
    ev, line = frames[3]
    assert (
        ev.payload
        == (
            f"event: {line['data']['type']}\ndata: "
            + json.dumps(line["data"], separators=(",", ":"), ensure_ascii=False)
            + "\n\n"
        ).encode()
    )
    assert lines[0]["tape"] == 2 and lines[0]["session"] == events[0].session_id
    assert sum("exchange" in line for line in lines) == 2  # set once, cleared once


def test_a_live_recordings_times_cost_one_field() -> None:
    sid, xid = new_id(), new_id()
    wall0 = 1_760_000_000_123_456_789
    events = [
        Event(sid, EventKind.SESSION_OPEN, 0, recorded_at_ns=wall0 - 5, meta={"name": "t"}),
        Event(sid, EventKind.REQUEST, 0, xid, recorded_at_ns=wall0, offset_ns=0),
    ]
    for n in range(1, 6):
        frame = json.dumps({"type": "x.delta", "sequence_number": n}, separators=(",", ":"))
        events.append(
            Event(
                sid, EventKind.SSE, n, xid, recorded_at_ns=wall0 + 1000 * n**2,
                offset_ns=1000 * n**2, payload=f"event: x.delta\ndata: {frame}\n\n".encode(),
                sse_event="x.delta", sse_type="x.delta", sequence_number=n,
            )
        )  # fmt: skip
    lines = [json.loads(line) for line in lean_text(events).splitlines()]
    assert [sorted(line) for line in lines[3:]] == [["data", "dt_ns"]] * 4
    assert lines[0]["at_ns"] == wall0 - 5 and lines[2]["dt_ns"] == 1000
    out = io.StringIO(lean_text(events))
    assert _read_text(out.getvalue()) == events


def _read_text(text: str, tmp: Path | None = None) -> list[Event]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.jsonl"
        path.write_text(text)
        return read_tape(path)


_ids = st.sampled_from([new_id() for _ in range(3)])
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _payloads(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=40))
    if choice == 1:
        return draw(st.text(max_size=40)).encode()
    value = draw(st.dictionaries(st.text(max_size=5), _json, max_size=4))
    value["type"] = draw(st.sampled_from(["response.created", "a\u2028b", "é"]))
    if draw(st.booleans()):
        value["sequence_number"] = draw(st.integers(-2, 10**20) | st.booleans())
    body = json.dumps(value, separators=(",", ":"), ensure_ascii=draw(st.booleans()))
    if choice == 2:
        return body.encode()
    return f"event: {draw(st.sampled_from([value['type'], 'other']))}\ndata: {body}\n\n".encode()


@st.composite
def _events(draw: st.DrawFn) -> Event:
    payload = draw(_payloads())
    return Event(
        session_id=draw(_ids),
        kind=draw(st.sampled_from(list(EventKind))),
        seq=draw(st.integers(0, 5)),
        exchange_id=draw(st.none() | _ids),
        recorded_at_ns=draw(st.integers(-(2**62), 2**62)),
        offset_ns=draw(st.none() | st.integers(0, 2**40)),
        payload=payload,
        meta=draw(st.dictionaries(st.text(max_size=4), _json, max_size=2)),
        sse_event=draw(st.none() | st.sampled_from(["response.created", "other"])),
        sse_type=draw(st.none() | st.sampled_from(["response.created", "é"])),
        sequence_number=draw(st.none() | st.integers(0, 10)),
        response_id=draw(st.none() | st.sampled_from(["resp_1", "resp_2"])),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_events(), min_size=1, max_size=12))
def test_random_events_read_back_exactly(events: list[Event]) -> None:
    text = lean_text(events)
    assert text.count("\n") == len(events)
    back = _read_text(text)
    assert back == events
    assert lean_text(back) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"kind":"session_open","tape":3,"session":"s","at_ns":1}\n', "version 3 is not one"),
        (
            '{"kind":"session_open","tape":2,"session":"s","at_ns":1}\n'
            '{"kind":"session_open","tape":1,"session":"t"}\n',
            ":2: tape format version 1 is not 2",
        ),
        (
            '{"kind":"session_open","tape":1,"session":"s","seq":0,"at_ns":1}\n'
            '{"kind":"session_open","tape":2,"session":"t","seq":0,"at_ns":1}\n',
            ":2: tape format version 2 is not 1",
        ),
        ('{"tape":2,"session":"s","at_ns":1}\n', ":1: field 'kind' is missing"),
        ('{"kind":"session_open","tape":2,"at_ns":1}\n', ":1: field 'session' is missing"),
        ('{"kind":"session_open","tape":2,"session":"s"}\n', ":1: field 'at_ns' is missing"),
        (
            '{"kind":"session_open","tape":2,"session":"s","at_ns":1}\n{"kind":"sse","data":{}}\n',
            ":2: field 'data': has no string 'type'",
        ),
        (
            '{"kind":"session_open","tape":2,"session":"s","at_ns":1}\n'
            '{"kind":"body","json":[],"text":"x"}\n',
            ":2: a line holds one of data, json, text and b64",
        ),
    ],
)
def test_bad_format_2_lines_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(TapeError, match=message):
        read_tape(path)


# -- compressed tapes -------------------------------------------------------------------------


@pytest.fixture
def zst(tmp_path: Path) -> Path:
    path = tmp_path / "stream.jsonl.zst"
    write_tape(read_tape(STREAM), path)
    return path


def test_a_zst_name_writes_a_compressed_tape_that_reads_back(zst: Path, tmp_path: Path) -> None:
    raw = zst.read_bytes()
    assert raw.startswith(ZSTD_MAGIC) and len(raw) < STREAM.stat().st_size / 10
    assert read_tape(zst) == read_tape(STREAM)
    assert detect_format(zst) == "tape"
    # Read by content, not by name.
    renamed = tmp_path / "renamed.jsonl"
    shutil.copy(zst, renamed)
    assert read_tape(renamed) == read_tape(STREAM)


def test_import_and_export_of_zst_round_trip(db_url: str, tmp_path: Path, zst: Path) -> None:
    from recorder.store import migrate

    migrate.upgrade(db_url)
    result = run("import", str(zst), "--db", db_url)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = tmp_path / "again.jsonl.zst"
    result = run("export", NAME, "--no-hashes", "-o", str(out), "--db", db_url)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert out.read_bytes() == zst.read_bytes()  # same lines, same compression
    plain = tmp_path / "again.jsonl"
    with EventStore.open(db_url) as store:
        export_sessions(store, [NAME], plain, hashes=False)
    assert plain.read_text() == lean_text(read_tape(zst))


def test_a_damaged_zst_tape_is_one_error_line_and_imports_nothing(
    db_url: str, tmp_path: Path, zst: Path
) -> None:
    from recorder.store import migrate

    migrate.upgrade(db_url)
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(zst.read_bytes()[: len(zst.read_bytes()) // 2])
    result = CliRunner().invoke(main, ["import", str(cut), "--db", db_url])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert "damaged zstd-compressed tape" in result.stderr
    with EventStore.open(db_url) as store:
        assert store.sessions() == []


def test_every_zst_tape_codetape_writes_carries_the_zstd_checksum(
    store: EventStore, tmp_path: Path, zst: Path
) -> None:
    import zstandard

    # Archive files are written by write_tape too (recorder/archive.py).
    import_file(store, STREAM)
    exported = tmp_path / "exported.jsonl.zst"
    export_sessions(store, [NAME], exported, hashes=False)
    for path in (zst, exported):
        assert zstandard.get_frame_parameters(path.read_bytes()).has_checksum, path


def test_a_flipped_bit_in_a_zst_tape_is_refused_never_read_as_other_bytes(
    tmp_path: Path, zst: Path
) -> None:
    from recorder.tape_file import open_tape_lines

    good = "".join(line for _, line in open_tape_lines(zst))
    raw = zst.read_bytes()
    flipped = tmp_path / "flipped.jsonl.zst"
    refused = 0
    # Every 61st bit of the file (about 1,500 cases, header and checksum included).
    for bit in range(0, len(raw) * 8, 61):
        damaged = bytearray(raw)
        damaged[bit // 8] ^= 1 << (bit % 8)
        flipped.write_bytes(damaged)
        try:
            text = "".join(line for _, line in open_tape_lines(flipped))
        except TapeError as exc:
            assert "damaged zstd-compressed tape" in str(exc) or "not UTF-8" in str(exc)
            refused += 1
            continue
        assert text == good, f"bit {bit} flipped reads as other bytes"
    assert refused > 1000


def test_a_damaged_exported_zst_tape_is_refused_by_import(db_url: str, tmp_path: Path) -> None:
    """The reported case: one bit of an exported tape flipped, imported into a fresh database."""
    from recorder.store import migrate

    source = f"sqlite:///{tmp_path / 'source.db'}"
    migrate.upgrade(source)
    assert run("import", str(STREAM), "--db", source).exit_code == 0  # type: ignore[attr-defined]
    tape = tmp_path / "nh.jsonl.zst"
    out = run("export", NAME, "--no-hashes", "-o", str(tape), "--db", source)
    assert out.exit_code == 0, out.output  # type: ignore[attr-defined]
    damaged = bytearray(tape.read_bytes())
    damaged[214] ^= 1
    tape.write_bytes(damaged)
    migrate.upgrade(db_url)
    result = CliRunner().invoke(main, ["import", str(tape), "--db", db_url])
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"Error: {tape}: a damaged zstd-compressed tape (its checksum does not match its "
        "content: bytes were changed)\n"
    )
    with EventStore.open(db_url) as store:
        assert store.sessions() == []


def test_a_zst_tape_written_without_a_checksum_still_reads(tmp_path: Path) -> None:
    import zstandard

    old = tmp_path / "old.jsonl.zst"
    old.write_bytes(zstandard.ZstdCompressor(level=9).compress(STREAM.read_bytes()))
    assert not zstandard.get_frame_parameters(old.read_bytes()).has_checksum
    assert read_tape(old) == read_tape(STREAM)


def test_replay_transport_and_serve_read_a_zst_tape(zst: Path) -> None:
    recording = load_tape(zst)
    assert recording.exchanges == load_tape(STREAM).exchanges
    import httpx2

    http = httpx2.Client(transport=ReplayTransport(zst))
    with OpenAI(api_key="t", base_url="https://api.openai.com/v1", http_client=http) as client:
        replayed = [reissue(client, x) for x in recording.exchanges]
    with (
        ReplayServer(ReplayApp(recording)) as server,
        OpenAI(api_key="t", base_url=server.base_url, max_retries=0) as client,
    ):
        served = [reissue(client, x) for x in recording.exchanges]
        assert server.app.status()["unplayed"] == []
    assert replayed == served and len(served) == 1


def test_diff_reads_zst_tapes(zst: Path) -> None:
    result = CliRunner().invoke(main, ["diff", "--exit-code", str(zst), str(STREAM)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("no differences")


def test_verify_reads_a_zst_tape_alone_and_against_its_checkpoint(
    store: EventStore, tmp_path: Path
) -> None:
    private_path, public_path = write_key_pair(tmp_path / "key")
    import_file(store, STREAM)
    _, note = create_checkpoint(store, load_private_key(private_path))
    tape = tmp_path / "proven.jsonl.zst"
    export_sessions(store, [NAME], tape, checkpoint=note)
    assert tape.read_bytes().startswith(ZSTD_MAGIC)
    assert verify_tape(tape).ok
    checked = verify_tape(tape, key=load_public_key(public_path))
    assert checked.ok and checked.checks[0].covered == len(read_tape(STREAM))
    out = CliRunner().invoke(main, ["verify", str(tape), "--key", str(public_path)])
    assert out.exit_code == 0, out.output


def test_the_pytest_plugin_replays_a_zst_tape(pytester: pytest.Pytester, zst: Path) -> None:
    target = pytester.path / "fixtures/test_z/test_sync.jsonl.zst"
    target.parent.mkdir(parents=True)
    shutil.copy(zst, target)
    pytester.makepyfile(
        test_z="""
        from replay.reissue import reissue

        def test_sync(codetape, openai_client):
            assert codetape.path.name == "test_sync.jsonl.zst"
            assert [reissue(openai_client, x) for x in codetape.recording.exchanges]
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)

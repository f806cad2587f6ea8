"""The lean row (0005): a log written under 0004 upgrades and still verifies; payloads compress.

Every test runs on SQLite and PostgreSQL where it touches a database.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from recorder.cli import main
from recorder.errors import StoreError
from recorder.events import Event, EventKind, StoredEvent, new_id
from recorder.store import EventStore, codec, migrate
from recorder.store.codec import UnknownCodec
from recorder.store.verify import ChainChecker, VerifyReport
from recorder.tape import read_tape

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from storage import insert_wide

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "fixtures/realdata/openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
)
_WIDE = (
    "position, session_id, exchange_id, seq, kind, recorded_at_ns, offset_ns, sse_event, "
    "sse_type, sequence_number, response_id, meta, payload, hash_format, prev_hash, hash"
)


def write_0004_log(url: str, events: list[Event]) -> list[tuple[object, ...]]:
    """The rows as a 0004 codetape stored them, hashes and all; returns them."""
    migrate.upgrade(url, "0004_no_replace")
    engine = sa.create_engine(url)
    try:
        return insert_wide(engine, events)
    finally:
        engine.dispose()


def verify_0004(url: str) -> VerifyReport:
    """The 0004 codetape's verify: every wide row, in position order, through the checker."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT {_WIDE} FROM events ORDER BY position").all()
    finally:
        engine.dispose()
    checker = ChainChecker()
    for r in rows:
        checker.feed(
            StoredEvent(
                position=r[0], session_id=r[1], exchange_id=r[2], seq=r[3],
                kind=EventKind(r[4]), recorded_at_ns=r[5], offset_ns=r[6], sse_event=r[7],
                sse_type=r[8], sequence_number=r[9], response_id=r[10], meta_json=r[11],
                payload=bytes(r[12]), hash_format=r[13], prev_hash=r[14], hash=r[15],
            )
        )  # fmt: skip
    return checker.finish()


def test_a_0004_log_upgrades_and_verifies_before_and_after(db_url: str) -> None:
    events = read_tape(FIXTURE)
    # A second session with meta, gaps in optional fields and an explicit capture gap.
    sid = new_id()
    events += [
        Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "second"}),
        Event(sid, EventKind.CAPTURE_GAP, 1, meta={"reason": "full"}),
        Event(sid, EventKind.SESSION_CLOSE, 2),
    ]
    wide = write_0004_log(db_url, events)
    # What `codetape verify` did at 0004: the chain checker over the wide rows as stored.
    assert verify_0004(db_url).ok
    runner = CliRunner()
    before = runner.invoke(main, ["db", "upgrade", "--db", db_url])
    assert before.exit_code == 0, before.output
    assert migrate.current_revision(db_url) == migrate.head_revision()
    after = runner.invoke(main, ["verify", "--db", db_url])
    assert after.exit_code == 0, after.output
    assert f"ok: {len(events)} events verified" in after.output
    with EventStore.open(db_url) as store:
        back = list(store.iter_events())
        # Every column reads back as the 0004 row held it, prev_hash and hash included.
        assert [
            (
                e.position, e.session_id, e.exchange_id, e.seq, e.kind.value, e.recorded_at_ns,
                e.offset_ns, e.sse_event, e.sse_type, e.sequence_number, e.response_id,
                e.meta_json, e.payload, e.hash_format, e.prev_hash, e.hash,
            )
            for e in back
        ] == [tuple(r) for r in wide]  # fmt: skip
        with store.engine.connect() as conn:
            compressed = conn.exec_driver_sql(
                "SELECT count(*) FROM events WHERE codec IS NOT NULL"
            ).scalar()
        assert compressed and compressed > len(events) // 2
        # Appends continue the migrated chain.
        store.append([Event(sid, EventKind.CAPTURE_GAP, None, meta={"reason": "later"})])
        assert store.verify().ok


def test_the_0004_check_finds_a_broken_wide_log(sqlite_url: str) -> None:
    """verify_0004 is a real check: a wide row altered before the upgrade fails it."""
    write_0004_log(sqlite_url, read_tape(FIXTURE)[:40])
    assert verify_0004(sqlite_url).ok
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER events_no_update")
        conn.exec_driver_sql("UPDATE events SET recorded_at_ns = 1 WHERE position = 7")
    engine.dispose()
    assert verify_0004(sqlite_url).first_bad_position == 7


def test_downgrade_restores_the_wide_rows(db_url: str) -> None:
    wide = write_0004_log(db_url, read_tape(FIXTURE))
    migrate.upgrade(db_url)
    migrate.downgrade(db_url, "0004_no_replace")
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT {_WIDE} FROM events ORDER BY position").all()
    finally:
        engine.dispose()
    assert [(*r[:12], bytes(r[12]), *r[13:]) for r in rows] == [tuple(r) for r in wide]


def test_payloads_round_trip_compressed_and_raw(store: EventStore) -> None:
    events = read_tape(FIXTURE)
    store.append(events)
    assert [e.payload for e in store.iter_events()] == [e.payload for e in events]
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT codec, stored_payload, item_id FROM event_rows ORDER BY position"
        ).all()
    kinds = {c for c, _, _ in stored}
    assert codec.DEFAULT_CODEC in kinds and kinds <= {None, codec.ELIDED, codec.DEFAULT_CODEC}
    # Rows left raw are the small ones; compressed rows are smaller than their payload.
    for (used, data, item), ev in zip(stored, events, strict=True):
        if item is not None:
            assert f'"item_id":"{item}"'.encode() in ev.payload
            assert item.encode() not in bytes(data)
        cut = ev.payload.replace(f'"item_id":"{item}"'.encode(), b'"item_id":""', 1)
        if used is None:
            assert bytes(data) == cut
        elif used == codec.ELIDED:
            assert ev.sse_event is not None
            assert f"event: {ev.sse_event}\ndata: ".encode() + bytes(data) == cut
        else:
            assert len(data) < len(ev.payload)
    assert store.verify().ok


def test_compression_can_be_switched_off(store: EventStore) -> None:
    store.codec = None
    events = read_tape(FIXTURE)[:30]
    store.append(events)
    with store.engine.connect() as conn:
        used = {c for (c,) in conn.exec_driver_sql("SELECT codec FROM events")}
    # Frames still leave out the event line their row holds; nothing is compressed.
    assert used == {None, codec.ELIDED}
    assert [e.payload for e in store.iter_events()] == [e.payload for e in events]
    assert store.verify().ok


def test_a_frame_keeps_its_event_line_unless_it_is_exactly_the_rows() -> None:
    frame = b'event: response.created\ndata: {"type":"response.created"}\n\n'
    assert codec.encode(frame, None, "response.created") == (
        codec.ELIDED,
        b'{"type":"response.created"}\n\n',
        None,
    )
    assert codec.decode(codec.ELIDED, b'{"type":"response.created"}\n\n', "response.created") == (
        frame
    )
    # Another name, a CRLF frame, no name: stored as they came.
    assert codec.encode(frame, None, "response.done") == (None, frame, None)
    crlf = frame.replace(b"\n", b"\r\n")
    assert codec.encode(crlf, None, "response.created") == (None, crlf, None)
    assert codec.encode(frame, None, None) == (None, frame, None)
    with pytest.raises(StoreError, match="no event name"):
        codec.decode(codec.ELIDED, b"{}", None)


def test_a_row_decompresses_alone(store: EventStore) -> None:
    events = read_tape(FIXTURE)
    store.append(events)
    with store.engine.connect() as conn:
        position, used, data, item = conn.exec_driver_sql(
            "SELECT position, codec, stored_payload, item_id FROM event_rows "
            "WHERE codec > 0 ORDER BY position DESC LIMIT 1"
        ).one()
    # Nothing but the row's own bytes, its dictionary id and its item id.
    assert codec.decode(used, bytes(data), None, item) == events[position - 1].payload
    assert used == codec.DEFAULT_CODEC


def test_small_payloads_stay_raw() -> None:
    assert codec.encode(b"data: 1\n\n") == (None, b"data: 1\n\n", None)
    assert codec.encode(b"") == (None, b"", None)
    noise = bytes(range(256))  # incompressible: stored as it is
    assert codec.encode(noise) == (None, noise, None)


@pytest.mark.parametrize(
    "payload",
    [
        b'data: {"item_id":"msg_1","delta":"x"}\n\n',
        b'data: {"item_id":"msg_1","other":{"item_id":"msg_2"}}\n\n',
        b'data: {"item_id":"","delta":"x"}\n\n',  # empty: nothing to cut
        b'data: {"item_id":"a\\"b"}\n\n',  # escaped: left as it is
        b'data: {"item_id":"msg_1',  # unterminated
        b'{"item_id":"id with spaces"}',
    ],
)
def test_an_item_id_is_cut_out_and_put_back_exactly(payload: bytes) -> None:
    for used in (None, codec.DEFAULT_CODEC):
        stored_codec, stored, item = codec.encode(payload, used)
        assert codec.decode(stored_codec, stored, None, item) == payload
        if item is not None:
            assert payload.count(item.encode()) > stored.count(item.encode())


def test_an_unknown_dictionary_is_a_clear_error(store: EventStore) -> None:
    store.append(read_tape(FIXTURE)[:20])
    with pytest.raises(UnknownCodec, match="dictionary 77, which this codetape does not ship"):
        codec.decode(77, b"\x00")
    with store.engine.begin() as conn:
        if store.backend == "postgresql":
            conn.exec_driver_sql("ALTER TABLE events DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER events_no_update")
        conn.exec_driver_sql("UPDATE events SET codec = 77 WHERE position = 5")
    with pytest.raises(UnknownCodec, match=r"the event at position 5: .*dictionary 77"):
        list(store.iter_events())
    # verify lists the damaged row and goes on: the rest of the chain still checks.
    report = store.verify()
    assert not report.ok and report.checked == 20 and report.head_position == 20
    [problem] = report.problems
    assert problem.position == 5 and "does not decode" in problem.message
    assert "dictionary 77" in problem.message
    result = CliRunner().invoke(main, ["verify", "--db", store.url])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "5" in result.output and "dictionary 77" in result.output


def test_a_corrupt_compressed_payload_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="does not decompress"):
        codec.decode(codec.DEFAULT_CODEC, b"\x00\x01garbage")


def test_the_shipped_dictionaries_are_known() -> None:
    assert codec.DEFAULT_CODEC in codec.known_codecs()


@pytest.mark.parametrize("used", [codec.DEFAULT_CODEC, None])
def test_encoding_a_batch_at_once_stores_what_encoding_each_payload_would(used: int | None) -> None:
    """The appends encode a batch in one call (one GIL release for all its
    compression): every row stored exactly as encoding it alone would."""
    frames = [
        e
        for tape in sorted((Path(__file__).parents[1] / "fixtures" / "realdata").rglob("*.jsonl"))
        for e in read_tape(tape)
        if e.kind is EventKind.SSE
    ][:600]
    payloads = [e.payload for e in frames] + [b"", b"data: 1\n\n"]
    names = [e.sse_event for e in frames] + [None, "x"]
    batch = codec.encode_all(payloads, names, used)
    assert batch == [codec.encode(p, used, n) for p, n in zip(payloads, names, strict=True)]
    kinds = {c for c, _, _ in batch}
    # Compressed and not, with and without their event line.
    assert ({codec.DEFAULT_CODEC, None} if used else {codec.ELIDED, None}) <= kinds
    assert codec.encode_all([], [], used) == []

"""The append path: work done before the write lock, PostgreSQL's COPY, the stream check.

A PostgreSQL append compresses, finds keys (making new ones in a short
transaction of their own) and builds each row's COPY tuple and hash header
before it takes the log's write lock; under it only the chain is computed
and the rows COPYed. These tests prove the same events come back with the
same hashes, that keys are indeed made outside the lock, that what the lock
alone can decide (hooks, seqs the store assigns) still is, and that the
database's stream check (migration 0007) refuses what it refused before.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.errors import ImmutableLogError, StoreError
from recorder.events import Event, EventKind, canonical_json, new_id
from recorder.store import EventStore
from recorder.store.codec import encode, encoder
from recorder.store.hashing import (
    event_digest,
    row_digest,
    text,
    texts,
)
from recorder.store.store import APPEND_LOCK

_text = st.text(max_size=40)
_maybe_text = st.none() | _text
_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=300, deadline=None)
@given(
    prev=st.binary(min_size=32, max_size=32).map(bytes.hex),
    position=st.integers(min_value=1, max_value=2**62),
    session_id=_text,
    exchange_id=_maybe_text,
    seq=st.integers(min_value=0, max_value=2**31 - 1),
    kind=_text,
    recorded_at_ns=_ints,
    offset_ns=st.none() | _ints,
    sse_event=_maybe_text,
    sse_type=_maybe_text,
    sequence_number=st.none() | _ints,
    response_id=_maybe_text,
    meta=st.dictionaries(_text, _text | st.integers(), max_size=3),
    payload=st.binary(max_size=64),
)
def test_the_split_header_and_prepared_texts_hash_exactly_like_event_digest(
    prev: str,
    position: int,
    session_id: str,
    exchange_id: str | None,
    seq: int,
    kind: str,
    recorded_at_ns: int,
    offset_ns: int | None,
    sse_event: str | None,
    sse_type: str | None,
    sequence_number: int | None,
    response_id: str | None,
    meta: dict[str, object],
    payload: bytes,
) -> None:
    # How an append hashes without event_digest (on SQLite and PostgreSQL):
    # a stream's texts made once, per event its ints and payload.
    meta_json = canonical_json(meta)
    fields = (session_id, exchange_id)
    rest = (kind, recorded_at_ns, offset_ns, sse_event, sse_type, sequence_number)
    expected = event_digest(prev, position, *fields, seq, *rest, response_id, meta_json, payload)
    got = row_digest(
        prev, position, texts(session_id, exchange_id), seq, text(kind), recorded_at_ns,
        offset_ns, texts(sse_event, sse_type), sequence_number, texts(response_id, meta_json),
        payload,
    )  # fmt: skip
    assert got == expected


_item_ids = st.text("abAZ09_-", max_size=210) | st.text(max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    before=st.binary(max_size=80),
    item=_item_ids,
    after=st.binary(max_size=300),
    quoted=st.booleans(),
    sse_event=st.none() | st.sampled_from(["response.output_text.delta", "x"]),
    codec=st.none() | st.just(1),
)
def test_the_batch_encoder_stores_exactly_what_encode_stores(
    before: bytes,
    item: str,
    after: bytes,
    quoted: bool,
    sse_event: str | None,
    codec: int | None,
) -> None:
    head = b"" if sse_event is None else b"event: %s\ndata: " % sse_event.encode()
    payload = head + before + b'"item_id":"' + item.encode() + (b'"' if quoted else b"") + after
    assert encoder(codec)(payload, sse_event) == encode(payload, codec, sse_event)


def test_an_int_field_given_as_a_bool_is_hashed_as_stored(store: EventStore) -> None:
    # The column keeps 1 for True: the hash must cover what verify reads back.
    sid, xid = _opened(store)
    store.append([Event(sid, EventKind.SSE, 1, xid, offset_ns=True, sequence_number=False)])
    [back] = store.exchange_events(xid)[1:]
    assert (back.offset_ns, back.sequence_number) == (1, 0)
    assert store.verify().ok


def test_a_field_of_the_wrong_type_is_hashed_by_the_encoder(sqlite_url: str) -> None:
    # SQLite takes a float in an integer column (PostgreSQL refuses it). Not an
    # int where one belongs: the row is hashed as event_digest hashes it (the
    # JSON encoder's text for the value given), as before.
    store = EventStore.open(sqlite_url, upgrade=True)
    sid, xid = _opened(store)
    store.append([Event(sid, EventKind.SSE, 1, xid, recorded_at_ns=5.5)])  # type: ignore[arg-type]
    [back] = store.exchange_events(xid)[1:]
    assert back.hash == event_digest(
        back.prev_hash, back.position, sid, xid, 1, "sse", 5.5,  # type: ignore[arg-type]
        None, None, None, None, None, "{}", b"",
    ).hex()  # fmt: skip
    store.close()


def _frames(sid: str, xid: str, count: int, start: int = 0) -> list[Event]:
    return [
        Event(
            sid,
            EventKind.SSE,
            start + i,
            xid,
            offset_ns=i * 1000,
            payload=b'event: response.output_text.delta\ndata: {"type":"response.output_text.'
            b'delta","item_id":"msg_%d","delta":"%d"}\n\n' % (i % 3, i),
            sse_event="response.output_text.delta",
            sse_type="response.output_text.delta",
            sequence_number=start + i,
            response_id="resp_1",
        )
        for i in range(count)
    ]


def _opened(store: EventStore, name: str = "s") -> tuple[str, str]:
    sid, xid = new_id(), new_id()
    store.append(
        [
            Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": name}),
            Event(sid, EventKind.REQUEST, 0, xid, payload=b"{}", meta={"method": "POST"}),
        ]
    )
    return sid, xid


def test_events_come_back_as_appended_with_a_chain_that_verifies(store: EventStore) -> None:
    sid, xid = _opened(store)
    meta = {"name": "ünïcødé ☃", "n": 1, "nested": {"quote": '"\\'}}
    batch = [
        *_frames(sid, xid, 40, start=1),
        Event(sid, EventKind.CAPTURE_GAP, 1, meta=meta),
        # Incompressible payloads larger than one COPY block in all.
        *[
            Event(sid, EventKind.SSE, 41 + i, xid, payload=os.urandom(30_000), sse_type="raw")
            for i in range(50)
        ],
    ]
    positions = store.append(batch)
    assert positions == list(range(3, 3 + len(batch)))
    back = list(store.iter_events(after=2))
    assert [(e.session_id, e.exchange_id, e.seq, e.kind, e.payload) for e in back] == [
        (e.session_id, e.exchange_id, e.seq, e.kind, e.payload) for e in batch
    ]
    assert [e.meta for e in back] == [dict(e.meta) for e in batch]
    assert [(e.sse_event, e.sse_type, e.sequence_number, e.response_id) for e in back] == [
        (e.sse_event, e.sse_type, e.sequence_number, e.response_id) for e in batch
    ]
    assert store.verify().ok


def test_batches_of_every_size_store_each_row_once_in_order(store: EventStore) -> None:
    # SQLite inserts a batch in statements of 250 rows, then of 25, then the
    # rest: sizes on and around each bound.
    sid, xid = _opened(store)
    seq, sent = 1, []
    for size in (1, 24, 25, 26, 249, 250, 251, 276, 523):
        batch = _frames(sid, xid, size, start=seq)
        assert len(store.append(batch)) == size
        sent += batch
        seq += size
    back = store.exchange_events(xid)[1:]
    assert [(e.seq, e.payload) for e in back] == [(e.seq, e.payload) for e in sent]
    assert store.verify().ok


def test_events_a_hook_adds_are_built_under_the_lock(store: EventStore) -> None:
    sid, xid = _opened(store)
    other = new_id()  # a session no key exists for yet

    def prepare(conn: sa.Connection, items: list[Event], head: int) -> tuple[list[Event], None]:
        assert head == 2
        added = [
            Event(other, EventKind.SESSION_OPEN, None, meta={"name": "added"}),
            Event(other, EventKind.CAPTURE_GAP, None, meta={"reason": "test"}),
        ]
        return [items[0], *added, items[1]], None

    frames = _frames(sid, xid, 2, start=1)
    assert store.append(frames, prepare=prepare) == [3, 4, 5, 6]
    back = list(store.iter_events(after=2))
    assert [(e.session_id, e.seq, e.kind) for e in back] == [
        (sid, 1, EventKind.SSE),
        (other, 0, EventKind.SESSION_OPEN),
        (other, 1, EventKind.CAPTURE_GAP),
        (sid, 2, EventKind.SSE),
    ]
    assert store.find_session("added").id == other
    assert store.verify().ok


def test_a_refused_append_leaves_no_exchange_counted(store: EventStore) -> None:
    sid, xid = _opened(store)
    later = new_id()
    clash = [
        Event(sid, EventKind.REQUEST, 0, later, payload=b"{}"),
        Event(sid, EventKind.REQUEST, 0, xid, payload=b"{}"),  # xid's seq 0 is taken
    ]
    with pytest.raises(ImmutableLogError):
        store.append(clash)
    [info] = store.sessions()
    assert info.exchanges == 1
    assert [e.position for e in store.iter_events()] == [1, 2]
    # The key made for the refused exchange (on PostgreSQL, committed before
    # the lock) takes nothing from a later append of that exchange.
    store.append([Event(sid, EventKind.REQUEST, 0, later, payload=b"{}")])
    assert store.sessions()[0].exchanges == 2
    assert store.verify().ok


@pytest.mark.postgres
def test_new_keys_are_committed_before_the_write_lock(pg_url: str) -> None:
    store = EventStore.open(pg_url, upgrade=True)
    libpq = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    holder = psycopg.connect(libpq)
    watcher = psycopg.connect(libpq, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
        sid, xid = new_id(), new_id()
        done: list[list[int]] = []
        appender = threading.Thread(
            target=lambda: done.append(
                store.append(
                    [
                        Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "k"}),
                        Event(sid, EventKind.REQUEST, 0, xid, payload=b"{}"),
                    ]
                )
            )
        )
        appender.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        deadline = time.monotonic() + 120  # a safety net for a broken run, not a speed limit
        while watcher.execute(waiting).fetchone() != (1,):
            assert time.monotonic() < deadline and appender.is_alive()
            time.sleep(0.01)
        # The append waits for the log's lock, its keys already made and visible.
        found = watcher.execute(
            "SELECT (SELECT count(*) FROM sessions WHERE public_id = %s), "
            "(SELECT count(*) FROM exchanges WHERE public_id = %s), "
            "(SELECT count(*) FROM events)",
            (sid, xid),
        ).fetchone()
        assert found == (1, 1, 0)
        holder.commit()
        appender.join(120)
        assert done == [[1, 2]]
        assert store.verify().ok
    finally:
        holder.close()
        watcher.close()
        store.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("seq", 2**31),
        ("offset_ns", 2**63),
        ("sequence_number", -(2**63) - 1),
        ("sequence_number", 2**31),
    ],
)
def test_a_value_out_of_its_column_range_refuses_the_whole_batch(
    pg_url: str, column: str, value: int
) -> None:
    with EventStore.open(pg_url, upgrade=True) as store:
        sid, xid = _opened(store)
        [frame] = _frames(sid, xid, 1, start=1)
        fields = {"seq": frame.seq, "offset_ns": frame.offset_ns, "sequence_number": 1}
        bad = Event(
            sid,
            EventKind.SSE,
            exchange_id=xid,
            payload=b"x",
            **{**fields, column: value},  # type: ignore[arg-type]
        )
        with pytest.raises(StoreError, match=f"{column} .*out of range"):
            store.append([frame, bad])
        assert store.last_position() == 2
        assert store.verify().ok


@pytest.mark.postgres
def test_a_bad_row_after_rows_already_sent_refuses_the_whole_batch(pg_url: str) -> None:
    """Rows go to the server in blocks as they are chained: a failure after the
    first block was sent still leaves nothing, and the connection usable."""
    with EventStore.open(pg_url, upgrade=True) as store:
        sid, xid = _opened(store)
        # Incompressible payloads: well over one block of COPY data before the bad row.
        good = [Event(sid, EventKind.SSE, 1 + i, xid, payload=os.urandom(2048)) for i in range(100)]
        bad = Event(sid, EventKind.SSE, 2**31, xid, payload=b"x")
        with pytest.raises(StoreError, match=r"seq .*out of range"):
            store.append([*good, bad])
        assert store.last_position() == 2
        assert store.append(good[:3]) == [3, 4, 5]
        assert store.verify().ok


def _raw_insert(conn: sa.Connection, rows: list[tuple[int, int | None, int]]) -> None:
    """Rows (position, exchange_key, seq) of session key 1, kind key 1, straight into events."""
    for position, exchange_key, seq in rows:
        conn.exec_driver_sql(
            "INSERT INTO events (position, session_key, exchange_key, seq, kind_key, "
            "recorded_at_ns, payload, hash_format_key, hash) "
            f"VALUES ({position}, 1, {'NULL' if exchange_key is None else exchange_key}, "
            f"{seq}, 1, 0, '\\x00'::bytea, 1, '\\x00'::bytea)"
        )


@pytest.mark.postgres
def test_the_stream_check_refuses_a_clash_anywhere_in_a_statement(pg_url: str) -> None:
    with EventStore.open(pg_url, upgrade=True) as store:
        sid, xid = _opened(store)
        store.append(_frames(sid, xid, 9, start=1))  # seqs 0-9 of the exchange
        engine = store.engine
        with engine.connect() as conn:
            exchange_key = conn.exec_driver_sql("SELECT max(id) FROM exchanges").scalar()
        # A batch whose seqs surround an existing one (5), and one clashing with itself.
        for seqs in ([10, 11, 5], [20, 21, 20]):
            with pytest.raises(sa.exc.DBAPIError, match="immutable"), engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO events (position, session_key, exchange_key, seq, kind_key, "
                    "recorded_at_ns, payload, hash_format_key, hash) SELECT 100 + n, 1, "
                    f"{exchange_key}, s, 1, 0, '\\x00'::bytea, 1, '\\x00'::bytea "
                    f"FROM unnest(ARRAY{seqs}) WITH ORDINALITY AS u(s, n)"
                )
        # Session-level events: seq 0 of the session is its session_open.
        with pytest.raises(sa.exc.DBAPIError, match="immutable"), engine.begin() as conn:
            _raw_insert(conn, [(200, None, 3), (201, None, 0)])
        # Seqs around existing ones without taking any are accepted.
        with engine.begin() as conn:
            _raw_insert(conn, [(300, exchange_key, 12), (301, exchange_key, 30)])
        with engine.connect() as conn:
            seqs = conn.exec_driver_sql(
                f"SELECT seq FROM events WHERE exchange_key = {exchange_key} ORDER BY seq"
            ).scalars()
            assert list(seqs) == [*range(10), 12, 30]

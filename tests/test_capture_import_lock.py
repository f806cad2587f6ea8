"""A long import next to a live recording: bounded transactions, and the recorder gets its turn.

The import is a real tape of tens of thousands of events in one session; the
recording is a real stream through the SDK into the same log at the same time.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest
from fake_upstream import FIXTURES, Upstream, load_tape

from recorder.capture import CaptureSession
from recorder.client import record
from recorder.errors import SessionExists
from recorder.events import Event, EventKind, new_id
from recorder.ingest import BATCH_EVENTS, import_file
from recorder.store import EventStore
from recorder.tape import read_tape, write_tape

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
BASE = "https://api.openai.com/v1"


def long_tape(path: Path, exchanges: int) -> tuple[str, int]:
    """A tape of one session holding ``exchanges`` copies of the code interpreter stream."""
    source = read_tape(FIXTURES / CI_STREAM)
    sid = new_id()
    opened = next(e for e in source if e.kind is EventKind.SESSION_OPEN)
    events: list[Event] = [dataclasses.replace(opened, session_id=sid, meta={"name": "long"})]
    body = [e for e in source if e.exchange_id is not None]
    for _ in range(exchanges):
        xid = new_id()
        events.extend(dataclasses.replace(e, session_id=sid, exchange_id=xid) for e in body)
    events.append(Event(sid, EventKind.SESSION_CLOSE, 1, recorded_at_ns=opened.recorded_at_ns))
    write_tape(events, path)
    return sid, len(events)


@pytest.mark.slow
def test_a_long_import_leaves_the_lock_to_a_live_recorder_between_batches(
    store: EventStore, tmp_path: Path
) -> None:
    tape = tmp_path / "long.jsonl"
    imported_sid, count = long_tape(tape, 80)  # 39,522 events
    session = CaptureSession(store, "live", writer="thread")
    importing = threading.Event()

    def pace(_exchange: int, k: int) -> None:
        if k == 5:
            importing.set()
        threading.Event().wait(0.002)

    def live() -> None:
        upstream = Upstream(load_tape(CI_STREAM) * 3, any_path=True, before_frame=pace)
        with record(
            store, session, transport=upstream.transport(), api_key="k", base_url=BASE
        ) as c:
            for _ in range(3):
                for _event in c.responses.create(model="m", input="x", stream=True):
                    pass

    recorder = threading.Thread(target=live)
    recorder.start()
    assert importing.wait(60)
    result = import_file(store, tape)
    recorder.join(120)
    session.close()
    assert result.events == count

    # The live recording committed while the import ran, not after it.
    imported = [e.position for e in store.session_events(imported_sid)]
    during = [
        e.position
        for e in store.session_events(session.id)
        if imported[0] < e.position < imported[-1]
    ]
    assert during, "the live recording never got the lock during the import"
    assert [(x.sse_events, x.outcome) for x in store.exchanges(session.id)] == [
        (491, "completed")
    ] * 3
    report = store.verify()
    assert report.ok and report.open_exchanges == [] and report.capture_gaps == 0


def test_an_import_appends_in_bounded_transactions(store: EventStore, tmp_path: Path) -> None:
    batches: list[int] = []

    class Counting(EventStore):
        def append(self, batch: Iterable[Event]) -> list[int]:
            positions = super().append(batch)
            batches.append(len(positions))
            return positions

    tape = tmp_path / "long.jsonl"
    _, count = long_tape(tape, 12)  # 5,930 events
    import_file(Counting(store.engine, store.url), tape)
    assert sum(batches) == count
    assert max(batches) <= BATCH_EVENTS and len(batches) >= 3


def test_an_interrupted_import_completes_when_run_again_and_stores_nothing_twice(
    store: EventStore, tmp_path: Path
) -> None:
    tape = tmp_path / "long.jsonl"
    sid, count = long_tape(tape, 10)
    events = read_tape(tape)
    store.append(events[:2500])  # what a killed import left: whole batches, in order
    assert not store.find_session(sid).closed

    result = import_file(store, tape)
    assert (result.events, result.already) == (count - 2500, 2500)  # what it added
    stored = list(store.session_events(sid))
    assert [(e.kind, e.exchange_id, e.seq, e.payload) for e in stored] == [
        (e.kind, e.exchange_id, e.seq, e.payload) for e in events
    ]
    assert store.find_session(sid).closed and store.verify().ok
    with pytest.raises(SessionExists, match="already in the database"):
        import_file(store, tape)  # now complete: a duplicate


def test_a_session_held_with_other_content_is_still_a_duplicate(
    store: EventStore, tmp_path: Path
) -> None:
    tape = tmp_path / "long.jsonl"
    long_tape(tape, 2)
    events = read_tape(tape)
    store.append([*events[:5], dataclasses.replace(events[5], payload=b"data: other\n\n")])
    before = store.last_position()
    with pytest.raises(SessionExists):
        import_file(store, tape)
    assert store.last_position() == before


def test_an_import_that_fails_midway_says_what_is_stored_and_completes_when_run_again(
    store: EventStore, tmp_path: Path
) -> None:
    from recorder.errors import StoreError

    tape = tmp_path / "long.jsonl"
    long_tape(tape, 10)  # 4,942 events: three transactions
    calls: list[int] = []

    class Failing(EventStore):
        def append(self, batch: Iterable[Event], **kw: object) -> list[int]:
            calls.append(1)
            if len(calls) == 2:
                raise StoreError("database error: disk full (test)")
            return super().append(batch)

    with pytest.raises(StoreError, match=r"2000 of its 4942 events were stored before that"):
        import_file(Failing(store.engine, store.url), tape)
    result = import_file(store, tape)  # run again: the rest, nothing twice
    # It says what it added, and what an earlier import had stored already.
    assert (result.events, result.already) == (2942, 2000)
    events = read_tape(tape)
    [sid] = {e.session_id for e in events}
    assert len(list(store.session_events(sid))) == 4942
    assert store.find_session(sid).closed and store.verify().ok

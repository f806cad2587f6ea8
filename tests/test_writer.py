"""The background writer: group commit, order, flush and close semantics."""

from __future__ import annotations

from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore
from recorder.writer import Writer


def frames(session_id: str, exchange_id: str, n: int) -> list[Event]:
    return [
        Event(session_id, EventKind.SSE, 2 + i, exchange_id, payload=f"data: {i}\n\n".encode())
        for i in range(n)
    ]


def test_group_commit_keeps_order_and_never_commits_per_event(store: EventStore) -> None:
    sid, xid = new_id(), new_id()
    writer = Writer(store)
    writer.submit(Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "w"}))
    writer.submit(Event(sid, EventKind.REQUEST, 0, xid, meta={"method": "POST", "url": "u"}))
    writer.submit(Event(sid, EventKind.RESPONSE_HEAD, 1, xid, meta={"status": 200}))
    for ev in frames(sid, xid, 3000):
        assert writer.submit(ev)
    assert writer.flush(30)
    stats = writer.stats
    assert stats.stored == 3003 and stats.lost == 0
    assert stats.commits * 10 < stats.stored  # batches, not one commit per event
    stored = store.exchange_events(xid)
    assert [e.seq for e in stored] == list(range(3002))
    assert [e.payload for e in stored[2:]] == [f"data: {i}\n\n".encode() for i in range(3000)]
    writer.close()
    assert not writer.submit(Event(sid, EventKind.SESSION_CLOSE, None))  # closed: dropped
    assert writer.stats.lost == 1


def test_close_drains_what_is_queued(store: EventStore) -> None:
    sid = new_id()
    writer = Writer(store, flush_interval=60.0)  # only close can make it write now
    writer.submit(Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "w"}))
    writer.submit(Event(sid, EventKind.SESSION_CLOSE, None))
    writer.close()
    assert [e.kind for e in store.session_events(sid)] == [
        EventKind.SESSION_OPEN,
        EventKind.SESSION_CLOSE,
    ]
    assert writer.flush(1)  # nothing pending

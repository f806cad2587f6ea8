"""A failed append never costs another thread's append its keys, nor hands it
keys that were rolled back.

An append that fails (here: an event JSON cannot hold, refused while its
batch is staged) drops the store's cached keys, since keys its transaction
made were rolled back. Another thread's append staging at that moment had
found some of its keys in that cache a moment before; it must still find
them, not fail with a KeyError and lose its batch.
"""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from recorder.errors import StoreError
from recorder.events import Event, EventKind, new_id
from recorder.store.store import EventStore


def test_a_failing_append_does_not_fail_a_concurrent_one(store: EventStore) -> None:
    session = new_id()
    store.append([Event(session, EventKind.SESSION_OPEN, 0, meta={"name": "steady"})])
    bad_session = new_id()
    store.append([Event(bad_session, EventKind.SESSION_OPEN, 0, meta={"name": "buggy"})])
    bad = Event(bad_session, EventKind.SSE, None, new_id(), meta={"x": object()})
    done = threading.Event()
    refused = 0

    def fail_repeatedly() -> None:
        nonlocal refused
        while not done.is_set():
            try:
                store.append([bad])
            except TypeError:
                refused += 1

    spoiler = threading.Thread(target=fail_repeatedly)
    spoiler.start()
    errors: list[BaseException] = []
    exchanges = []
    try:
        for _ in range(150):
            xid = new_id()  # a new exchange each time: its keys are made on the way
            batch = [
                Event(session, EventKind.REQUEST, 0, xid, meta={"method": "POST"}),
                Event(session, EventKind.SSE, 1, xid, payload=b"data: 1\n\n",
                      sse_event="response.created", response_id=new_id()),
            ]  # fmt: skip
            try:
                store.append(batch)
                exchanges.append(xid)
            except Exception as exc:  # the bug: a KeyError from the cleared cache
                errors.append(exc)
    finally:
        done.set()
        spoiler.join()
    assert refused > 0
    assert errors == []
    assert len(exchanges) == 150
    assert all(len(store.exchange_events(x)) == 2 for x in exchanges[-5:])
    assert store.verify().ok


def test_keys_a_failing_append_made_are_never_seen_by_another(store: EventStore) -> None:
    """Keys made inside an append's transaction reach the caches other threads
    read only once it has committed: here its COPY (or INSERT) is refused
    after the hook's new response id got its key."""
    sid, xid = new_id(), new_id()
    store.append(
        [
            Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "keys"}),
            Event(sid, EventKind.REQUEST, 0, xid, meta={"method": "POST"}),
        ]
    )
    caches = store._keys.ids  # as another thread staging now would hold them

    def clash(conn: sa.Connection, items: list[Event], last: int) -> tuple[list[Event], None]:
        # seq 0 is taken: the row is refused once its keys are made.
        return [
            *items,
            Event(sid, EventKind.SSE, 0, xid, payload=b"x", response_id="resp_gone"),
        ], None

    with pytest.raises(StoreError):
        store.append([], prepare=clash)
    if store.backend == "postgresql":
        # Its threads read the caches with no lock held: the failed append
        # never put the key where they look.
        assert "resp_gone" not in caches["responses"]
    # SQLite's appends read the caches only under the write lock, which the
    # failed one held until it had dropped them.
    assert "resp_gone" not in store._keys.ids["responses"]
    # The value gets its key for real the next time, and the log verifies.
    store.append([Event(sid, EventKind.SSE, 1, xid, payload=b"y", response_id="resp_gone")])
    assert [e.response_id for e in store.exchange_events(xid)] == [None, "resp_gone"]
    assert store.verify().ok

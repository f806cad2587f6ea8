"""A failed append never costs another thread's append its keys.

An append that fails (here: an event JSON cannot hold, refused while its
batch is staged) drops the store's cached keys, since keys its transaction
made were rolled back. Another thread's append staging at that moment had
found some of its keys in that cache a moment before; it must still find
them, not fail with a KeyError and lose its batch.
"""

from __future__ import annotations

import threading

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

"""Opening a session: bad labels and metadata are refused up front; a bad event later is a bug.

Both writers (the thread sink and the recorder child) are checked the same way.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_upstream import Upstream, load_tape

from recorder.capture import BadMetadata, CaptureSession
from recorder.capture.session import WriterMode
from recorder.client import record
from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
BASE = "https://api.openai.com/v1"
WRITERS = ["thread", "process"]


def stream_once(store: EventStore, session: CaptureSession) -> int:
    upstream = Upstream(load_tape(CI_STREAM))
    with record(store, session, transport=upstream.transport(), api_key="k", base_url=BASE) as c:
        return sum(1 for _ in c.responses.create(model="m", input="x", stream=True))


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize(
    ("labels", "metadata", "named"),
    [
        (None, {"when": datetime.date(2026, 1, 1)}, r"metadata 'when' is a datetime\.date"),
        (None, {"run": {"steps": [1, {"at": object()}]}}, r"metadata 'run\.steps\[1\]\.at'"),
        (None, {"ratio": float("nan")}, r"metadata 'ratio' is nan"),
        (None, {"ids": {3: "x"}}, r"metadata key ids\.3 is a int"),
        ({"team": 5}, None, r"label 'team' is a int"),
    ],
)
def test_bad_labels_and_metadata_are_refused_at_open_naming_the_key(
    store: EventStore,
    writer: WriterMode,
    labels: dict[str, str] | None,
    metadata: dict[str, object] | None,
    named: str,
) -> None:
    before = store.last_position()
    with pytest.raises(ValueError, match=named) as refused:
        CaptureSession(store, "bad", labels=labels, metadata=metadata, writer=writer)
    assert isinstance(refused.value, BadMetadata)
    assert store.last_position() == before  # nothing was recorded
    # ...and the process goes on recording other sessions.
    good = CaptureSession(store, "good", metadata={"when": "2026-01-01"}, writer=writer)
    assert stream_once(store, good) == 491
    good.close()
    [x] = store.exchanges(store.find_session("good").id)
    assert x.sse_events == 491 and x.outcome == "completed"


_EXIT_AFTER_BAD_METADATA = """
import datetime, sys
sys.path.insert(0, {tests!r})
from fake_upstream import Upstream, load_tape
from recorder.capture import CaptureSession
from recorder.client import record
try:
    CaptureSession({url!r}, "bad", metadata={{"when": datetime.date(2026, 1, 1)}})
except ValueError as exc:
    print("refused:", exc, flush=True)
upstream = Upstream(load_tape({tape!r}))
with record({url!r}, "after", transport=upstream.transport(), api_key="k",
            base_url="https://api.openai.com/v1") as client:
    print(sum(1 for _ in client.responses.create(model="m", input="x", stream=True)), flush=True)
"""


def test_bad_metadata_neither_stops_the_recorder_child_nor_hangs_the_exit(
    store: EventStore,
) -> None:
    code = _EXIT_AFTER_BAD_METADATA.format(
        tests=str(Path(__file__).parent), url=store.url, tape=CI_STREAM
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("refused: metadata 'when'")
    assert done.stdout.splitlines()[1] == "491"
    # A guard against hanging at exit, not a speed figure: today's bound is 60 s.
    assert time.monotonic() - started < 30
    [x] = store.exchanges(store.find_session("after").id)
    assert x.sse_events == 491 and x.outcome == "completed"


@pytest.mark.parametrize("writer", WRITERS)
def test_an_event_that_cannot_be_encoded_costs_its_exchange_only_and_is_logged_as_a_bug(
    store: EventStore, writer: WriterMode, caplog: pytest.LogCaptureFixture
) -> None:
    session = CaptureSession(store, "buggy", writer=writer)
    other = CaptureSession(store, "bystander", writer=writer)
    bad_x, good_x = new_id(), new_id()
    request = {"method": "POST", "url": BASE + "/responses"}
    started = time.monotonic()
    for xid in (bad_x, good_x):
        session.sink.submit(Event(session.id, EventKind.REQUEST, 0, xid, meta=request))
        head = Event(session.id, EventKind.RESPONSE_HEAD, 1, xid, meta={"status": 200})
        session.sink.submit(head)
    # A bug puts something JSON cannot hold into an event (no public path does).
    session.sink.submit(
        Event(session.id, EventKind.SSE, 2, bad_x, payload=b"data: 1\n\n", meta={"x": object()})
    )
    for xid, seq in ((bad_x, 3), (good_x, 2)):
        session.sink.submit(Event(session.id, EventKind.SSE, seq, xid, payload=b"data: 2\n\n"))
    for xid, seq in ((bad_x, 4), (good_x, 3)):
        session.sink.submit(
            Event(session.id, EventKind.EXCHANGE_END, seq, xid, meta={"outcome": "completed"})
        )
    assert stream_once(store, other) == 491  # another session records meanwhile
    session.close()
    other.close()
    # Not retried as if the store were down (today: 10 s of retries, then all lost).
    assert time.monotonic() - started < 8
    assert "codetape bug" in caplog.text

    stats = session.stats
    assert stats.store_errors == 0 and stats.recorder_errors >= 1
    bad = store.exchange_events(bad_x)
    assert [(e.kind, e.seq) for e in bad] == [
        (EventKind.REQUEST, 0),
        (EventKind.RESPONSE_HEAD, 1),
        (EventKind.EXCHANGE_END, 2),
    ]
    assert bad[-1].meta["capture_gap"]["lost_events"] == 2
    assert len(store.exchange_events(good_x)) == 4
    [gap] = [e for e in store.session_events(session.id) if e.kind is EventKind.CAPTURE_GAP]
    assert gap.meta["exchange"] == bad_x and "codetape bug" in gap.meta["reason"]
    report = store.verify()
    assert report.ok and report.capture_gaps == 1 and report.open_exchanges == []
    [x] = store.exchanges(store.find_session("bystander").id)
    assert x.sse_events == 491 and x.outcome == "completed"

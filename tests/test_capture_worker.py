"""The recorder child of process mode: shared, replaced when it dies, drained at exit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fake_upstream import Upstream, load_tape

from recorder.capture import CaptureSession
from recorder.capture.worker import shared_worker
from recorder.client import record
from recorder.errors import CodetapeError
from recorder.events import EventKind
from recorder.repair import process_state
from recorder.store import EventStore, migrate
from recorder.store.engine import is_process_local

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
BASE = "https://api.openai.com/v1"


def stream_once(store: EventStore, session: CaptureSession) -> int:
    upstream = Upstream(load_tape(CI_STREAM))
    with record(store, session, transport=upstream.transport(), api_key="k", base_url=BASE) as c:
        return sum(1 for _ in c.responses.create(model="m", input="x", stream=True))


def test_sessions_share_one_child_and_each_is_recorded_whole(
    store: EventStore, tmp_path: Path
) -> None:
    other_url = f"sqlite:///{tmp_path}/other.db"
    migrate.upgrade(other_url)
    first = CaptureSession(store, "first")
    second = CaptureSession(other_url, "second")
    child = shared_worker().pid
    assert stream_once(store, first) == 491 and stream_once(store, second) == 491
    first.close()
    second.close()
    third = CaptureSession(store, "third")
    third.close()
    assert shared_worker().pid == child  # the child outlives the sessions it served

    for where, name in ((store, "first"), (EventStore.open(other_url), "second")):
        recorded = where.find_session(name)
        assert recorded.closed
        [x] = where.exchanges(recorded.id)
        assert x.sse_events == 491 and x.outcome == "completed"
        assert where.verify().ok
        identity = recorded.metadata["recorder"]
        assert identity["pid"] == os.getpid() and identity["writer"]["pid"] == child
    assert first.stats.events_stored == second.stats.events_stored == 1 + 2 + 491 + 1 + 1


def test_auto_keeps_a_customised_store_in_this_process(store: EventStore) -> None:
    class Counting(EventStore):
        appended = 0

        def append(self, batch: Any) -> list[int]:
            positions = super().append(batch)
            Counting.appended += len(positions)
            return positions

    counting = Counting(store.engine, store.url)
    session = CaptureSession(counting, "custom")
    assert session._remote is None  # a child opening the URL would not count
    assert stream_once(counting, session) == 491
    session.close()
    assert Counting.appended == 1 + 2 + 491 + 1 + 1
    assert CaptureSession(store, "plain")._remote is not None


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("sqlite://", True),
        ("sqlite:///:memory:", True),
        ("sqlite:///file:m?mode=memory&cache=shared&uri=true", True),
        ("sqlite:////tmp/x.db", False),
        ("postgresql://u@127.0.0.1/db", False),
        ("not a url", False),
    ],
)
def test_in_memory_databases_are_process_local(url: str, local: bool) -> None:
    assert is_process_local(url) is local


def test_process_writer_refuses_an_in_memory_database() -> None:
    with pytest.raises(CodetapeError, match=r"in-memory SQLite .* writer='thread'"):
        CaptureSession("sqlite://", "refused", writer="process")


def test_a_dead_child_costs_its_sessions_the_rest_and_the_next_session_gets_a_new_one(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    doomed = CaptureSession(store, "doomed")
    worker = shared_worker()
    os.kill(worker.pid, signal.SIGKILL)
    for _ in range(500):
        if worker.failed is not None:
            break
        time.sleep(0.01)
    assert worker.failed == "the recorder process exited"
    assert "calls continue unrecorded" in caplog.text
    assert stream_once(store, doomed) == 491  # the calls go on, unrecorded
    doomed.close()

    fresh = CaptureSession(store, "after")
    assert shared_worker().pid != worker.pid
    assert stream_once(store, fresh) == 491
    fresh.close()
    [x] = store.exchanges(store.find_session("after").id)
    assert x.sse_events == 491 and x.outcome == "completed"


def test_strict_session_refuses_calls_once_its_child_is_gone(store: EventStore) -> None:
    from recorder.capture import CaptureError

    strict = CaptureSession(store, "strict", on_store_error="raise")
    worker = shared_worker()
    os.kill(worker.pid, signal.SIGKILL)
    for _ in range(500):
        if worker.failed is not None:
            break
        time.sleep(0.01)
    with pytest.raises(CaptureError, match="the recorder process exited"):
        stream_once(store, strict)
    strict.close()


_LEFT_OPEN = """
import sys
sys.path.insert(0, {tests!r})
from fake_upstream import Upstream, load_tape
from recorder.capture import CaptureSession
from recorder.client import record
from recorder.capture.worker import shared_worker
session = CaptureSession({url!r}, "left-open")
upstream = Upstream(load_tape({tape!r}))
with record({url!r}, session, transport=upstream.transport(), api_key="k",
            base_url="https://api.openai.com/v1") as client:
    n = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
print(n, shared_worker().pid, flush=True)
# No session.close(): the interpreter exits with the session open.
"""


def test_interpreter_exit_drains_the_child_before_it_goes(store: EventStore) -> None:
    code = _LEFT_OPEN.format(tests=str(Path(__file__).parent), url=store.url, tape=CI_STREAM)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, child = (int(v) for v in done.stdout.split())
    assert count == 491
    session = store.find_session("left-open")
    # The client waited for its child: both are gone, and nothing was lost.
    identity = session.metadata["recorder"]
    assert identity["writer"]["pid"] == child and process_state(identity) == "dead"
    assert not session.closed
    [x] = store.exchanges(session.id)
    assert x.sse_events == 491 and x.outcome == "completed"


_FORKS = """
import os, sys
sys.path.insert(0, {tests!r})
from fake_upstream import Upstream, load_tape
from recorder.capture import CaptureSession
from recorder.client import record
from recorder.capture.worker import shared_worker
parent_child = shared_worker().pid
pid = os.fork()
if pid == 0:
    # The fork gets a recorder child of its own; the parent's pipe is not touched.
    session = CaptureSession({url!r}, "in-fork")
    upstream = Upstream(load_tape({tape!r}))
    with record({url!r}, session, transport=upstream.transport(), api_key="k",
                base_url="https://api.openai.com/v1") as client:
        n = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
    session.close()
    print("fork", n, shared_worker().pid != parent_child, flush=True)
    sys.exit(0)
os.waitpid(pid, 0)
session = CaptureSession({url!r}, "in-parent")
upstream = Upstream(load_tape({tape!r}))
with record({url!r}, session, transport=upstream.transport(), api_key="k",
            base_url="https://api.openai.com/v1") as client:
    n = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
session.close()
print("parent", n, shared_worker().pid == parent_child, flush=True)
"""


def test_a_forked_client_records_through_a_child_of_its_own(store: EventStore) -> None:
    code = _FORKS.format(tests=str(Path(__file__).parent), url=store.url, tape=CI_STREAM)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["fork 491 True", "parent 491 True"]
    for name in ("in-fork", "in-parent"):
        session = store.find_session(name)
        [x] = store.exchanges(session.id)
        assert session.closed and x.sse_events == 491 and x.outcome == "completed"
    assert store.verify().ok
    kinds = [e.kind for e in store.session_events(store.find_session("in-parent").id)]
    assert kinds[0] is EventKind.SESSION_OPEN and kinds[-1] is EventKind.SESSION_CLOSE


def test_a_stalled_child_holds_the_client_back_instead_of_queueing_without_bound(
    store: EventStore,
) -> None:
    import threading

    session = CaptureSession(store, "stalled")
    worker = shared_worker()
    x = session.exchange()
    x.start("POST", BASE + "/responses", [], b"{}")
    x.response(200, [("content-type", "text/event-stream")], "HTTP/1.1")
    # Distinct objects: marshal writes a repeated object as a back-reference.
    frames = [b"data: %d " % n + b"x" * 8192 + b"\n\n" for n in range(400)]
    fed = threading.Event()

    def feed() -> None:
        for frame in frames:
            x.feed(frame)
        fed.set()

    worker.max_queued = 50
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        feeder = threading.Thread(target=feed)
        feeder.start()
        # The pipe fills, then the queue reaches its bound and the client waits
        # (a second at a time: checked well inside the first second).
        assert not fed.wait(0.5)
        assert len(worker._queue) <= 51
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    feeder.join(60)
    worker.max_queued = 4096
    assert fed.is_set()
    x.finish()
    session.close()
    [recorded] = store.exchanges(session.id)
    assert recorded.sse_events == 400  # all of them, once the child went on
    assert recorded.reason == "stream ended without a terminal event"


def test_the_child_lets_go_of_a_database_once_its_last_session_closes(tmp_path: Path) -> None:
    # A test run records each tape into a temporary database it then deletes.
    url = f"sqlite:///{tmp_path}/short-lived.db"
    migrate.upgrade(url)
    first, second = CaptureSession(url, "one"), CaptureSession(url, "two")
    child = shared_worker().pid

    def held() -> bool:
        targets = []
        for fd in Path(f"/proc/{child}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed while we look
                targets.append(os.readlink(fd))
        return any(str(tmp_path) in target for target in targets)

    assert stream_once(first.store, first) == 491
    first.close()
    assert held()  # the second session still records there
    second.close()
    assert not held()
    third = CaptureSession(url, "three")  # and it opens again when needed
    assert stream_once(third.store, third) == 491
    third.close()
    with EventStore.open(url) as store:
        names = [s.name for s in store.sessions()]
        # "one" and "two" were open at once, each with its own writer thread in
        # the child: either may commit its session_open first.
        assert sorted(names[:2]) == ["one", "two"] and names[2:] == ["three"]
        assert store.verify().ok

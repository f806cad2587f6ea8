"""The recorder child of writer="process": shared, replaced when it dies, drained at exit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner
from fake_upstream import Upstream, load_tape

from recorder.capture import CaptureSession
from recorder.capture.child import ProcessSink, shared_channel
from recorder.cli import main
from recorder.client import record
from recorder.errors import CodetapeError
from recorder.events import EventKind
from recorder.repair import process_state
from recorder.store import EventStore, migrate
from recorder.store.engine import is_process_local
from recorder.writer import Writer

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
    first = CaptureSession(store, "first", writer="process")
    second = CaptureSession(other_url, "second", writer="process")
    child = shared_channel().pid
    assert stream_once(store, first) == 491 and stream_once(store, second) == 491
    first.close()
    second.close()
    third = CaptureSession(store, "third", writer="process")
    third.close()
    assert shared_channel().pid == child  # the child outlives the sessions it served

    for where, name in ((store, "first"), (EventStore.open(other_url), "second")):
        recorded = where.find_session(name)
        assert recorded.closed
        [x] = where.exchanges(recorded.id)
        assert x.sse_events == 491 and x.outcome == "completed"
        assert where.verify().ok
        identity = recorded.metadata["recorder"]
        assert identity["pid"] == os.getpid() and identity["writer"]["pid"] == child
    assert first.stats.events_stored == second.stats.events_stored == 1 + 2 + 491 + 1 + 1


def test_the_default_sink_is_a_writer_thread_even_for_a_customised_store(
    store: EventStore,
) -> None:
    class Counting(EventStore):
        appended = 0

        def append(self, batch: Any) -> list[int]:
            positions = super().append(batch)
            Counting.appended += len(positions)
            return positions

    counting = Counting(store.engine, store.url)
    session = CaptureSession(counting, "custom")
    assert isinstance(session.sink, Writer)  # a child opening the URL would not count
    assert stream_once(counting, session) == 491
    session.close()
    assert Counting.appended == 1 + 2 + 491 + 1 + 1
    for writer, sink in (("auto", Writer), ("thread", Writer), ("process", ProcessSink)):
        with CaptureSession(store, writer, writer=writer) as other:  # type: ignore[arg-type]
            assert isinstance(other.sink, sink)


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


def _reaped(pid: int) -> bool:
    """The process is gone and its parent collected it (no <defunct> entry left)."""
    return not Path(f"/proc/{pid}").exists()


def test_a_child_killed_mid_stream_is_replaced_at_once_and_nothing_is_lost(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    session = CaptureSession(store, "survivor", writer="process")
    channel = shared_channel()
    first = channel.pid

    def kill(exchange: int, k: int) -> None:
        if (exchange, k) == (0, 200):
            os.kill(first, signal.SIGKILL)  # events 0-199 may be anywhere on the way

    upstream = Upstream(load_tape(CI_STREAM) * 2, any_path=True, before_frame=kill)
    with record(store, session, transport=upstream.transport(), api_key="k", base_url=BASE) as c:
        for _ in range(2):  # the second exchange starts after the child died
            assert sum(1 for _ in c.responses.create(model="m", input="x", stream=True)) == 491
    session.close()

    assert shared_channel() is channel and channel.pid != first and _reaped(first)
    assert "a new one" in caplog.text
    exchanges = store.exchanges(session.id)
    assert [(x.sse_events, x.outcome) for x in exchanges] == [(491, "completed")] * 2
    report = store.verify()
    assert report.ok and report.capture_gaps == 0 and report.open_exchanges == []
    stats = session.stats
    assert stats.events_lost == 0 and stats.events_stored == 1 + 2 * (2 + 491 + 1) + 1


def test_a_close_queued_behind_events_reaches_a_replacement_child_after_them(
    store: EventStore,
) -> None:
    import threading

    session = CaptureSession(store, "queued-close", writer="process")
    assert session.flush(30)
    channel = shared_channel()
    stopped = channel.pid
    os.kill(stopped, signal.SIGSTOP)  # the pipe fills: a burst stays unwritten, then more
    x = session.exchange()
    x.start("POST", BASE + "/responses", [], b"{}")
    x.response(200, [("content-type", "text/event-stream")], "HTTP/1.1")
    for n in range(300):
        x.feed(b"data: %d " % n + b"x" * 8192 + b"\n\n")  # no waiting: all of it queued
        if n == 99:
            time.sleep(0.2)  # the sender is stuck writing these 100 to the full pipe
    x.finish()
    closing = threading.Thread(target=session.close)  # its request waits behind the events
    closing.start()
    time.sleep(0.2)
    os.kill(stopped, signal.SIGKILL)
    os.kill(stopped, signal.SIGCONT)
    closing.join(60)
    assert not closing.is_alive() and channel.pid != stopped
    [recorded] = store.exchanges(session.id)
    assert recorded.sse_events == 300
    assert store.find_session(session.id).closed
    report = store.verify()
    assert report.ok and report.capture_gaps == 0 and report.open_exchanges == []


def test_the_proxy_keeps_recording_after_its_child_is_killed(store: EventStore) -> None:
    from fake_upstream import serve

    from recorder.proxy import RecordingProxy

    session = CaptureSession(
        store, "proxied", writer="process"
    )  # one session for the proxy's whole life
    upstream = Upstream(load_tape(CI_STREAM) * 3, any_path=True)
    with (
        serve(upstream) as upstream_url,
        serve(RecordingProxy(session, upstream_url)) as proxy,
        openai.OpenAI(api_key="k", base_url=proxy + "/v1", max_retries=0) as client,
    ):
        for n in range(3):
            if n == 1:
                os.kill(shared_channel().pid, signal.SIGKILL)
            assert sum(1 for _ in client.responses.create(model="m", input="x", stream=True)) == 491
    session.close()
    exchanges = store.exchanges(session.id)
    assert [(x.sse_events, x.outcome) for x in exchanges] == [(491, "completed")] * 3
    report = store.verify()
    assert report.ok and report.capture_gaps == 0 and report.open_exchanges == []


def test_a_child_that_keeps_dying_is_given_up_loudly_and_the_loss_is_in_the_log(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    from recorder.capture import CaptureError

    session = CaptureSession(store, "doomed", writer="process")
    strict = CaptureSession(store, "strict", on_store_error="raise", writer="process")
    channel = shared_channel()
    x = session.exchange()
    x.start("POST", BASE + "/responses", [], b"{}")
    x.response(200, [("content-type", "text/event-stream")], "HTTP/1.1")
    # The child is killed again as soon as it is replaced (an OOM killer, say):
    # events keep coming meanwhile, and none of it may vanish without a trace.
    for n in range(20):
        pid = channel.pid
        x.feed(b"data: %d\n\n" % n)
        os.kill(pid, signal.SIGKILL)
        for _ in range(1000):
            if channel.failed is not None or channel.pid != pid:
                break
            time.sleep(0.005)
        if channel.failed is not None:
            break
    assert channel.failed is not None and "keeps exiting" in channel.failed
    assert "calls continue unrecorded" in caplog.text
    x.feed(b"data: late\n\n")  # lost too, and counted
    assert x.ended is False and session.stats.events_lost >= 1
    with pytest.raises(CaptureError, match="keeps exiting"):
        strict.exchange()
    session.close()
    strict.close()

    report = store.verify()
    assert report.ok and report.capture_gaps >= 1
    verified = CliRunner().invoke(main, ["verify", "--db", store.url, "--json"])
    assert json.loads(verified.output)["capture_gaps"] == report.capture_gaps
    gaps = [e for e in store.session_events(session.id) if e.kind is EventKind.CAPTURE_GAP]
    assert gaps and "keeps exiting" in gaps[0].meta["reason"]
    assert sum(g.meta["lost_events"] for g in gaps) >= 1
    fresh = CaptureSession(store, "after", writer="process")  # a new session gets a new child
    assert shared_channel() is not channel
    assert stream_once(store, fresh) == 491
    fresh.close()
    [recorded] = store.exchanges(store.find_session("after").id)
    assert recorded.sse_events == 491 and recorded.outcome == "completed"


_LEFT_OPEN = """
import sys
sys.path.insert(0, {tests!r})
from fake_upstream import Upstream, load_tape
from recorder.capture import CaptureSession
from recorder.cli import main
from recorder.client import record
from recorder.capture.child import ProcessSink, shared_channel
session = CaptureSession({url!r}, "left-open", writer="process")
upstream = Upstream(load_tape({tape!r}))
with record({url!r}, session, transport=upstream.transport(), api_key="k",
            base_url="https://api.openai.com/v1") as client:
    n = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
print(n, shared_channel().pid, flush=True)
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
from recorder.cli import main
from recorder.client import record
from recorder.capture.child import ProcessSink, shared_channel
parent_child = shared_channel().pid
pid = os.fork()
if pid == 0:
    # The fork gets a recorder child of its own; the parent's pipe is not touched.
    session = CaptureSession({url!r}, "in-fork", writer="process")
    upstream = Upstream(load_tape({tape!r}))
    with record({url!r}, session, transport=upstream.transport(), api_key="k",
                base_url="https://api.openai.com/v1") as client:
        n = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
    session.close()
    print("fork", n, shared_channel().pid != parent_child, flush=True)
    sys.exit(0)
os.waitpid(pid, 0)
session = CaptureSession({url!r}, "in-parent", writer="process")
upstream = Upstream(load_tape({tape!r}))
with record({url!r}, session, transport=upstream.transport(), api_key="k",
            base_url="https://api.openai.com/v1") as client:
    n = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
session.close()
print("parent", n, shared_channel().pid == parent_child, flush=True)
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

    bound = 1024 * 1024
    session = CaptureSession(store, "stalled", max_pending_bytes=bound, writer="process")
    sink = session.sink
    assert isinstance(sink, ProcessSink)
    x = session.exchange()
    x.start("POST", BASE + "/responses", [], b"{}")
    x.response(200, [("content-type", "text/event-stream")], "HTTP/1.1")
    frames = [b"data: %d " % n + b"x" * 8192 + b"\n\n" for n in range(2000)]  # 16 MB
    fed: list[int] = []
    done = threading.Event()

    def feed() -> None:  # as the transports do: wait between chunks when told to
        for n, frame in enumerate(frames):
            if x.feed(frame):
                x.wait()
            fed.append(n)
            time.sleep(0.0001)
        done.set()

    child = shared_channel().pid
    os.kill(child, signal.SIGSTOP)
    try:
        feeder = threading.Thread(target=feed)
        feeder.start()
        # The child stores nothing: the client is held back, its memory bounded.
        assert not done.wait(1.0)
        held_at = len(fed)
        time.sleep(0.3)
        assert len(fed) == held_at < len(frames) // 2
        assert sink._unacked_bytes < 4 * bound
    finally:
        os.kill(child, signal.SIGCONT)
    feeder.join(60)
    assert done.is_set()
    x.finish()
    session.close()
    [recorded] = store.exchanges(session.id)
    assert recorded.sse_events == 2000  # all of them, once the child went on
    assert recorded.reason == "stream ended without a terminal event"


def test_the_child_lets_go_of_a_database_once_its_last_session_closes(tmp_path: Path) -> None:
    # A test run records each tape into a temporary database it then deletes.
    url = f"sqlite:///{tmp_path}/short-lived.db"
    migrate.upgrade(url)
    first, second = (
        CaptureSession(url, "one", writer="process"),
        CaptureSession(url, "two", writer="process"),
    )
    child = shared_channel().pid

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
    third = CaptureSession(url, "three", writer="process")  # and it opens again when needed
    assert stream_once(third.store, third) == 491
    third.close()
    with EventStore.open(url) as store:
        names = [s.name for s in store.sessions()]
        # "one" and "two" were open at once, each with its own writer thread in
        # the child: either may commit its session_open first.
        assert sorted(names[:2]) == ["one", "two"] and names[2:] == ["three"]
        assert store.verify().ok


@pytest.mark.skipif(sys.platform != "linux", reason="pipe sizes and niceness as Linux has them")
def test_the_child_runs_below_its_client_behind_a_pipe_that_holds_thousands_of_events(
    store: EventStore,
) -> None:
    import fcntl

    from recorder.capture.child import PIPE_SIZE
    from recorder.capture.worker import NICENESS

    session = CaptureSession(store, "priority", writer="process")
    try:
        channel = shared_channel()
        child = channel.pid
        # Its work can wait, the client's cannot: with no core free, the client goes first.
        assert os.getpriority(os.PRIO_PROCESS, child) == min(
            19, os.getpriority(os.PRIO_PROCESS, 0) + NICENESS
        )
        pipe = channel._child.stdin.fileno()
        assert fcntl.fcntl(pipe, fcntl.F_GETPIPE_SZ) >= min(
            PIPE_SIZE, int(Path("/proc/sys/fs/pipe-max-size").read_text())
        )
    finally:
        session.close()


def test_the_child_commits_a_paced_stream_in_few_large_transactions(store: EventStore) -> None:
    from recorder.capture.worker import CHILD_FLUSH_INTERVAL

    session = CaptureSession(store, "paced", writer="process")
    x = session.exchange()
    x.start("POST", BASE + "/responses", [], b"{}")
    x.response(200, [("content-type", "text/event-stream")], "HTTP/1.1")
    session.flush()
    before = session.stats.commits
    started = time.monotonic()
    for n in range(60):  # a frame every 10 ms
        x.feed(b'event: a\ndata: {"type":"a","sequence_number":%d,"x":1}\n\n' % n)
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    x.finish()
    session.flush()
    # One commit per CHILD_FLUSH_INTERVAL at most (a frame every 10 ms would
    # be 12 commits with the thread writer's 50 ms), plus the flush's own.
    assert session.stats.commits - before <= elapsed / CHILD_FLUSH_INTERVAL + 2
    session.close()
    [recorded] = store.exchanges(session.id)
    assert recorded.sse_events == 60

"""A session opened before a fork records the forked processes' exchanges too.

Each case runs in a fresh interpreter (forking pytest itself would be unsafe):
``os.fork`` with workers that end with ``sys.exit``, ``multiprocessing`` in
its fork context (a ``Pool`` and a ``Process``, whose children end with
``os._exit`` after multiprocessing's finalizers), and a gunicorn-like
``--preload`` master that opens the session and the client at import and
forks workers that serve requests. Both writers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recorder.capture.session import WriterMode
from recorder.events import EventKind
from recorder.store import EventStore

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
WRITERS = ["thread", "process"]

# The "application" every case shares: a session and a client made once, at import.
_APP = """
import os, sys, time
sys.path.insert(0, {tests!r})
from fake_upstream import Upstream, load_tape
import openai
from recorder.capture import CaptureSession, RecordingTransport
session = CaptureSession({url!r}, "app", writer={writer!r})
upstream = Upstream(load_tape({tape!r}) * 50, any_path=True)
client = openai.OpenAI(
    api_key="k", base_url="https://api.openai.com/v1", max_retries=0,
    http_client=openai.DefaultHttpxClient(
        transport=RecordingTransport(upstream.transport(), session=session)
    ),
)

def say(line):
    os.write(1, (line + "\\n").encode())  # one write: forked processes share the pipe

def call(_n=0):
    started = time.monotonic()
    count = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
    return count, time.monotonic() - started
"""

_OS_FORK = """
count, _ = call()  # the parent records before the fork...
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        count, took = call()  # ...each child in the fork...
        say(f"child {count} {took:.1f}")
        sys.exit(0)
    children.append(pid)
for pid in children:
    assert os.waitpid(pid, 0)[1] == 0
count, _ = call()  # ...and the parent after it
session.close()
say(f"parent {count}")
"""

_MP_POOL = """
import multiprocessing
if __name__ == "__main__":
    call()
    context = multiprocessing.get_context("fork")
    pool = context.Pool(2)
    results = pool.map(call, range(4))
    pool.close()
    pool.join()
    worker = context.Process(target=call)
    worker.start()
    worker.join()
    assert worker.exitcode == 0
    session.close()
    say(f"pool {[count for count, _ in results]}")
"""

# Like gunicorn's arbiter: the application is loaded before the workers are
# forked (--preload); a worker serves requests and leaves through sys.exit.
_PRELOAD = """
# The SDK builds its response models on its first call, in the process that
# makes it: warmed here once, through a client the session does not record, so
# that three workers do not each build them at the same time.
warm = openai.OpenAI(
    api_key="k", base_url="https://api.openai.com/v1", max_retries=0,
    http_client=openai.DefaultHttpxClient(
        transport=Upstream(upstream.scripts[:1], any_path=True).transport()
    ),
)
assert sum(1 for _ in warm.responses.create(model="m", input="x", stream=True)) == 491
workers = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        try:
            for request in range(2):
                count, took = call()
                say(f"served {count} {took:.1f}")
            sys.exit(0)
        finally:
            pass
    workers.append(pid)
for pid in workers:
    assert os.waitpid(pid, 0)[1] == 0
say("master done")
# The master never closes the application's session: it stays open, as a
# long-lived server's does, and its events are all stored at exit.
"""


def run_app(store: EventStore, writer: str, body: str) -> list[str]:
    code = _APP.format(
        tests=str(Path(__file__).parent), url=store.url, writer=writer, tape=CI_STREAM
    )
    done = subprocess.run(
        [sys.executable, "-c", code + body], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def assert_recorded_whole(store: EventStore, exchanges: int, *, closed: bool) -> None:
    session = store.find_session("app")
    assert session.closed is closed
    recorded = store.exchanges(session.id)
    assert [(x.sse_events, x.outcome) for x in recorded] == [(491, "completed")] * exchanges
    events = list(store.session_events(session.id))
    assert sum(1 for e in events if e.kind is EventKind.SESSION_CLOSE) == (1 if closed else 0)
    report = store.verify()
    assert report.ok and report.capture_gaps == 0 and report.open_exchanges == []


@pytest.mark.slow
@pytest.mark.parametrize("writer", WRITERS)
def test_os_fork_children_record_into_the_session_opened_before_the_fork(
    store: EventStore, writer: WriterMode
) -> None:
    lines = run_app(store, writer, _OS_FORK)
    children = [line.split() for line in lines if line.startswith("child")]
    assert [c[1] for c in children] == ["491", "491"]
    # A guard against the old one-second wait per event in a fork, not a speed figure.
    assert all(float(c[2]) < 30 for c in children)
    assert lines[-1] == "parent 491"
    assert_recorded_whole(store, 4, closed=True)


@pytest.mark.slow
@pytest.mark.parametrize("writer", WRITERS)
def test_multiprocessing_fork_workers_record_into_the_session(
    store: EventStore, writer: WriterMode
) -> None:
    lines = run_app(store, writer, _MP_POOL)
    assert lines[-1] == "pool [491, 491, 491, 491]"
    assert_recorded_whole(store, 1 + 4 + 1, closed=True)


@pytest.mark.slow
@pytest.mark.parametrize("writer", WRITERS)
def test_preloaded_app_workers_record_every_request(store: EventStore, writer: WriterMode) -> None:
    lines = run_app(store, writer, _PRELOAD)
    served = [line.split() for line in lines if line.startswith("served")]
    assert [s[1] for s in served] == ["491"] * 6
    assert lines[-1] == "master done"
    assert_recorded_whole(store, 6, closed=False)

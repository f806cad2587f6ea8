"""Recording and replay where ``os.register_at_fork`` or ``/proc`` do not exist.

Both are Linux/CPython conveniences: the fork hook resets a forked child's
sinks at once, and ``/proc`` tells a recorder's start time. Without them
``import recorder`` still works, replay works, and recording works, a forked
child included (its sessions notice the fork on their next request).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recorder.store import EventStore

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"

_WITHOUT = """
import os, pathlib, sys
# The standard library registers its own fork hooks on import where the hook
# exists: load those modules first, then take the hook away from codetape.
import asyncio, concurrent.futures, logging, random, threading
del os.register_at_fork
_read_text = pathlib.Path.read_text
def read_text(self, *args, **kwargs):
    if str(self).startswith("/proc"):
        raise FileNotFoundError(2, "No such file or directory", str(self))
    return _read_text(self, *args, **kwargs)
pathlib.Path.read_text = read_text

sys.path.insert(0, {tests!r})
import openai, recorder, replay
from fake_upstream import FIXTURES, Upstream, load_tape
from recorder.capture import CaptureSession, RecordingTransport
from recorder.repair import writer_identity
from replay import ReplayTransport
from replay.matching import MatchOptions

# Replay, through the SDK.
tape = FIXTURES / {tape!r}
match = MatchOptions(ignore_body_fields=["input", "model", "tools"])
replayed = openai.OpenAI(api_key="k", base_url="https://api.openai.com/v1",
    http_client=openai.DefaultHttpxClient(transport=ReplayTransport(tape, match=match)))
print("replayed", sum(1 for _ in replayed.responses.create(model="m", input="x", stream=True)))

# Recording, in this process and in a forked child.
session = CaptureSession({url!r}, "portable", writer={writer!r})
upstream = Upstream(load_tape({tape!r}) * 3, any_path=True)
client = openai.OpenAI(api_key="k", base_url="https://api.openai.com/v1", max_retries=0,
    http_client=openai.DefaultHttpxClient(
        transport=RecordingTransport(upstream.transport(), session=session)))
def call():
    return sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
print("parent", call(), flush=True)
# Without the fork hook nothing makes a fork wait for the writer thread to
# leave the database driver (see recorder.store.forkgate): flush first.
session.flush()
pid = os.fork()
if pid == 0:
    print("child", call(), flush=True)
    sys.exit(0)
assert os.waitpid(pid, 0)[1] == 0
print("parent", call(), flush=True)
session.close()
identity = writer_identity()
print("identity", identity["boot_id"], identity["start_ticks"], flush=True)
"""


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_recording_and_replay_work_without_the_fork_hook_or_proc(
    store: EventStore, writer: str
) -> None:
    code = _WITHOUT.format(
        tests=str(Path(__file__).parent), tape=CI_STREAM, url=store.url, writer=writer
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "replayed 491",
        "parent 491",
        "child 491",
        "parent 491",
        "identity None None",
    ]
    session = store.find_session("portable")
    recorded = store.exchanges(session.id)
    assert [(x.sse_events, x.outcome) for x in recorded] == [(491, "completed")] * 3
    report = store.verify()
    assert report.ok and report.capture_gaps == 0 and report.open_exchanges == []

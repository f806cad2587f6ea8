"""Benchmark: what recording costs the openai SDK consuming a long code interpreter stream.

Run: ``python bench/record.py [--events 5000] [--rounds 7]``.

The stream is *synthetic* (generated here, named ``synthetic``): a code
interpreter call whose code arrives as N ``code_interpreter_call_code.delta``
events, framed like the real recordings in fixtures/realdata. It is served
in process by ``httpx2.MockTransport`` one frame per chunk, so the figures
measure the client side only. In one run it prints:

* consume time, SDK alone vs SDK + codetape recorder (into SQLite), the ratio
  (median of alternating rounds), and the recorder's drain time on close, for
  the default writer (``auto``: the recorder child process) and the thread
  writer;
* what opening a session costs: the first one starts the recorder child, the
  next ones reuse it;
* time to first event, with and without the recorder;
* peak memory while recording 5,000 vs 50,000 events (flat = no whole-stream
  buffering): RSS of the client and of its recorder child, and of a thread
  mode client (RSS and traced Python memory);
* vcrpy recording the same stream, for comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recorder.capture import CaptureSession
from recorder.capture.session import WriterMode
from recorder.client import record
from recorder.store import EventStore, migrate

RESPONSE_ID = "resp_synthetic"


def synthetic_frames(deltas: int) -> Iterator[bytes]:
    """A ``synthetic`` code interpreter stream with ``deltas`` code delta events."""
    seq = 0

    def frame(event_type: str, **fields: object) -> bytes:
        nonlocal seq
        data = {"type": event_type, "sequence_number": seq, **fields}
        seq += 1
        return f"event: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    response = {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": 1760000000,
        "status": "in_progress",
        "model": "gpt-5-synthetic",
        "output": [],
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
    }
    item = {
        "id": "ci_synthetic",
        "type": "code_interpreter_call",
        "status": "in_progress",
        "code": "",
        "container_id": "cntr_synthetic",
        "outputs": None,
    }
    yield frame("response.created", response=response)
    yield frame("response.in_progress", response=response)
    yield frame("response.output_item.added", output_index=0, item=item)
    yield frame("response.code_interpreter_call.in_progress", output_index=0, item_id=item["id"])
    for n in range(deltas):
        yield frame(
            "response.code_interpreter_call_code.delta",
            output_index=0,
            item_id=item["id"],
            delta=f"x{n} = {n} ** 2\n",
            obfuscation="abc123",
        )
    code = "".join(f"x{n} = {n} ** 2\n" for n in range(min(deltas, 50)))
    yield frame(
        "response.code_interpreter_call_code.done", output_index=0, item_id=item["id"], code=code
    )
    yield frame("response.code_interpreter_call.interpreting", output_index=0, item_id=item["id"])
    yield frame("response.code_interpreter_call.completed", output_index=0, item_id=item["id"])
    done = {**item, "status": "completed", "code": code}
    yield frame("response.output_item.done", output_index=0, item=done)
    final = {**response, "status": "completed", "output": [done]}
    yield frame("response.completed", response=final)


class _Frames(httpx2.SyncByteStream):
    def __init__(self, deltas: int) -> None:
        self._deltas = deltas

    def __iter__(self) -> Iterator[bytes]:
        return synthetic_frames(self._deltas)


def source(deltas: int) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Frames(deltas)
        )

    return httpx2.MockTransport(handler)


def consume(client: openai.OpenAI) -> tuple[float, float, int, float]:
    """(seconds to consume, seconds to first event, events, CPU seconds) for one stream.

    CPU seconds are this process's (all its threads): what recording costs the
    client, whatever else the machine is doing.
    """
    cpu = time.process_time()
    start = time.perf_counter()
    first = 0.0
    count = 0
    for _event in client.responses.create(model="gpt-5", input="x", stream=True):
        if count == 0:
            first = time.perf_counter() - start
        count += 1
    return time.perf_counter() - start, first, count, time.process_time() - cpu


def plain_run(deltas: int) -> tuple[float, float, int, float]:
    http = openai.DefaultHttpxClient(transport=source(deltas))
    with openai.OpenAI(api_key="k", http_client=http, max_retries=0) as client:
        return consume(client)


def recorded_run(
    store: EventStore, deltas: int, writer: WriterMode = "auto"
) -> tuple[float, float, float, int, float]:
    """As plain_run, plus the time the session's close takes to drain the writer."""
    with record(
        store, "bench", transport=source(deltas), api_key="k", max_retries=0, writer=writer
    ) as client:
        total, first, count, cpu = consume(client)
        closing = time.perf_counter()
    return total, first, time.perf_counter() - closing, count, cpu


class _DiscardingStore(EventStore):
    """Takes appends and drops them: isolates the tee (hot path) from the database work."""

    def append(self, batch: object) -> list[int]:
        return []


def vcr_run(deltas: int, cassette: Path) -> tuple[float, float, int, float]:
    import vcr

    cassette.unlink(missing_ok=True)
    with vcr.use_cassette(str(cassette), record_mode="all"):
        return plain_run(deltas)


def peak_memory(store: EventStore, deltas: int) -> int:
    """Peak traced Python memory while recording one stream (thread mode: all in-process)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    recorded_run(store, deltas, "thread")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def peak_rss(url: str, deltas: int, writer: WriterMode) -> tuple[int, int]:
    """Peak resident memory (bytes) of a fresh client process recording one stream, untraced,
    and of its recorder child (0 in thread mode)."""
    bench = str(Path(__file__).resolve().parent)
    code = (
        f"import resource, sys; sys.path.insert(0, {bench!r}); import record as b; "
        "from recorder.capture.worker import _stop_shared; "
        f"from recorder.store import EventStore; s = EventStore.open({url!r}); "
        f"b.recorded_run(s, {deltas}, {writer!r}); _stop_shared(); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    client, child = out.stdout.split()[-2:]
    return int(client) * 1024, int(child) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="code delta events per stream")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    deltas = args.events
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        migrate.upgrade(url)
        with EventStore.open(url) as store:
            plain_run(200)  # warm up imports and pydantic models
            start = time.perf_counter()
            CaptureSession(store, "cold").close()
            open_cold = time.perf_counter() - start
            warm_opens = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                CaptureSession(store, "warm").close()
                warm_opens.append(time.perf_counter() - start)
            open_warm = statistics.median(warm_opens)
            recorded_run(store, 200, "thread")
            recorded_run(store, 200)
            plain: list[tuple[float, float, int, float]] = []
            recorded: list[tuple[float, float, float, int, float]] = []
            process: list[tuple[float, float, float, int, float]] = []
            for _ in range(args.rounds):
                plain.append(plain_run(deltas))
                recorded.append(recorded_run(store, deltas, "thread"))
                process.append(recorded_run(store, deltas))
            events = plain[0][2]
            t_plain = statistics.median(r[0] for r in plain)
            t_rec = statistics.median(r[0] for r in recorded)
            drain = statistics.median(r[2] for r in recorded)
            ttfe_plain = statistics.median(r[1] for r in plain)
            ttfe_rec = statistics.median(r[1] for r in recorded)
            t_proc = statistics.median(r[0] for r in process)
            drain_proc = statistics.median(r[2] for r in process)
            ttfe_proc = statistics.median(r[1] for r in process)
            cpu_plain = statistics.median(r[3] for r in plain)
            cpu_rec = statistics.median(r[4] for r in recorded)
            cpu_proc = statistics.median(r[4] for r in process)
            discard = _DiscardingStore(store.engine, store.url)
            t_tee = statistics.median(
                recorded_run(discard, deltas, "thread")[0] for _ in range(args.rounds)
            )
            vcr_times = [vcr_run(deltas, Path(tmp) / "cassette.yaml") for _ in range(3)]
            t_vcr = statistics.median(r[0] for r in vcr_times)
            ttfe_vcr = statistics.median(r[1] for r in vcr_times)
            mem_small = peak_memory(store, 5000)
            mem_large = peak_memory(store, 50000)
            rss_small = peak_rss(url, 5000, "thread")[0]
            rss_large = peak_rss(url, 50000, "thread")[0]
            split_small = peak_rss(url, 5000, "auto")
            split_large = peak_rss(url, 50000, "auto")
            stored = store.last_position()

    print(f"synthetic code interpreter stream: {events} events, {args.rounds} rounds (median)")
    print(
        f"  SDK alone               {t_plain * 1e3:8.1f} ms   (client CPU {cpu_plain * 1e3:.1f} ms)"
    )
    print(f"  SDK + codetape, default {t_proc * 1e3:8.1f} ms   ratio {t_proc / t_plain:.3f}x")
    print(f"    client CPU            {cpu_proc * 1e3:8.1f} ms   ratio {cpu_proc / cpu_plain:.3f}x")
    print(f"    drain on close        {drain_proc * 1e3:8.1f} ms")
    print(f"  SDK + codetape, thread  {t_rec * 1e3:8.1f} ms   ratio {t_rec / t_plain:.3f}x")
    print(f"    client CPU            {cpu_rec * 1e3:8.1f} ms   ratio {cpu_rec / cpu_plain:.3f}x")
    print(f"    drain on close        {drain * 1e3:8.1f} ms   ({stored} events stored in all)")
    print(f"    of which the tee      {t_tee * 1e3:8.1f} ms   ratio {t_tee / t_plain:.3f}x")
    print(f"  SDK + vcrpy             {t_vcr * 1e3:8.1f} ms   ratio {t_vcr / t_plain:.3f}x")
    print("time to first event")
    print(f"  SDK alone               {ttfe_plain * 1e3:8.2f} ms")
    print(f"  SDK + codetape, default {ttfe_proc * 1e3:8.2f} ms")
    print(f"  SDK + codetape, thread  {ttfe_rec * 1e3:8.2f} ms")
    print(f"  SDK + vcrpy             {ttfe_vcr * 1e3:8.2f} ms   (vcrpy reads the whole body)")
    print("opening a session (and closing it)")
    print(f"  first, starts the child {open_cold * 1e3:8.1f} ms")
    print(f"  next ones, child reused {open_warm * 1e3:8.1f} ms")
    print("peak memory while recording")
    print(f"  default: client RSS, 5,000   {split_small[0] / 1e6:8.1f} MB")
    ratio = split_large[0] / split_small[0]
    print(f"  default: client RSS, 50,000  {split_large[0] / 1e6:8.1f} MB   ratio {ratio:.2f}x")
    print(f"  default: child RSS, 5,000    {split_small[1] / 1e6:8.1f} MB")
    ratio = split_large[1] / split_small[1]
    print(f"  default: child RSS, 50,000   {split_large[1] / 1e6:8.1f} MB   ratio {ratio:.2f}x")
    print(f"  thread: process RSS, 5,000   {rss_small / 1e6:8.1f} MB")
    ratio = rss_large / rss_small
    print(f"  thread: process RSS, 50,000  {rss_large / 1e6:8.1f} MB   ratio {ratio:.2f}x")
    print(f"  thread: traced Python, 5,000  {mem_small / 1e6:8.2f} MB")
    ratio = mem_large / mem_small
    print(f"  thread: traced Python, 50,000 {mem_large / 1e6:8.2f} MB   ratio {ratio:.2f}x")
    print("  (tracing slows the writer below the stream's pace: the queue then stays")
    print("   within the writer's 2 MiB backpressure bound, whatever the stream's length)")


if __name__ == "__main__":
    main()

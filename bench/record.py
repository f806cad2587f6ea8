"""Benchmark: what recording costs the openai SDK consuming a long code interpreter stream.

Run: ``python bench/record.py [--events 5000] [--rounds 9] [--conditions free,busy,pinned]``.

The stream is *synthetic* (generated here, named ``synthetic``): a code
interpreter call whose code arrives as N ``code_interpreter_call_code.delta``
events, framed like the real recordings in fixtures/realdata. It is served in
process by ``httpx2.MockTransport`` one frame per chunk, with no latency: the
worst case for a recorder. Each round runs, interleaved, the SDK alone and the
SDK recording into SQLite through each sink (``writer="thread"``: a writer
thread in the client; ``writer="process"``: the client's recorder child).

Every CPU second is counted, whichever process spends it:

* client CPU: the client process, all its threads (for the thread sink, minus
  the writer thread, which is the sink);
* sink CPU: the writer thread (its own CPU clock), or the recorder child
  (the run time of its threads, from ``/proc/PID/task/*/schedstat``);
* total = client + sink, and the recording's share: total minus what the SDK
  alone spent, as a percentage of the latter;
* consume: the wall time until the SDK has the last event; drain: until the
  sink has stored everything after that.

Conditions: ``free`` (nothing else running: a core is free for the child),
``busy`` (one CPU hog per core, started here), ``pinned`` (the whole run,
recorder child included, on one core with ``taskset -c 0``). Ratios compare
with the SDK alone measured in the same condition and run. The ``free``
condition also reports opening a session, time to first event, peak memory
for 5,000 vs 50,000 events, and vcrpy recording the same stream.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx2
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import busy_cores

from recorder.capture import CaptureSession, RecordingTransport
from recorder.capture.child import shared_channel
from recorder.capture.session import WriterMode
from recorder.store import EventStore, migrate
from recorder.writer import Writer

RESPONSE_ID = "resp_synthetic"
SINKS: tuple[WriterMode, ...] = ("thread", "process")


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


@dataclass
class Run:
    """One stream consumed: seconds of wall time and of CPU."""

    consume: float
    first: float
    client_cpu: float
    sink_cpu: float = 0.0
    drain: float = 0.0
    events: int = 0

    @property
    def total_cpu(self) -> float:
        return self.client_cpu + self.sink_cpu


def consume(transport: httpx2.BaseTransport) -> tuple[float, float, int]:
    """(seconds to consume, seconds to first event, events) for one stream."""
    http = openai.DefaultHttpxClient(transport=transport)
    with openai.OpenAI(api_key="k", http_client=http, max_retries=0) as client:
        start = time.perf_counter()
        first = 0.0
        count = 0
        for _event in client.responses.create(model="gpt-5", input="x", stream=True):
            if count == 0:
                first = time.perf_counter() - start
            count += 1
        return time.perf_counter() - start, first, count


def plain_run(deltas: int) -> Run:
    cpu = time.process_time()
    wall, first, count = consume(source(deltas))
    return Run(wall, first, time.process_time() - cpu, events=count)


def _child_cpu(pid: int) -> float:
    """CPU seconds the threads of process ``pid`` have run (live threads, to the ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):  # the thread ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _sink_cpu(session: CaptureSession) -> float:
    sink = session.sink
    if isinstance(sink, Writer):
        thread = sink._thread
        assert thread is not None and thread.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return _child_cpu(shared_channel().pid)


def recorded_run(url: str, deltas: int, writer: WriterMode) -> Run:
    """As plain_run, recording into a new session; the sink's CPU counted apart.

    The session is opened before and closed after the measurement: its cost is
    per session, not per event (reported separately).
    """
    session = CaptureSession(url, "bench", writer=writer)
    session.flush()
    sink_before = _sink_cpu(session)
    cpu = time.process_time()
    wall, first, count = consume(RecordingTransport(source(deltas), session=session))
    started = time.perf_counter()
    session.flush()  # everything stored: the sink's work for this stream is done
    drain = time.perf_counter() - started
    process_cpu = time.process_time() - cpu
    sink_cpu = _sink_cpu(session) - sink_before
    session.close()
    client_cpu = process_cpu - sink_cpu if writer == "thread" else process_cpu
    return Run(wall, first, client_cpu, sink_cpu, drain, count)


def median_run(runs: list[Run]) -> Run:
    return Run(*(statistics.median(getattr(r, f) for r in runs) for f in Run.__dataclass_fields__))


def measure(url: str, deltas: int, rounds: int) -> dict[str, Run]:
    """Medians of ``rounds`` interleaved rounds: the SDK alone, then each sink."""
    plain_run(200)  # warm up imports and pydantic models
    for writer in SINKS:
        recorded_run(url, 200, writer)
    runs: dict[str, list[Run]] = {"sdk": [], **{w: [] for w in SINKS}}
    for _ in range(rounds):
        runs["sdk"].append(plain_run(deltas))
        for writer in SINKS:
            runs[writer].append(recorded_run(url, deltas, writer))
    return {name: median_run(r) for name, r in runs.items()}


def condition(name: str, url: str, deltas: int, rounds: int) -> dict[str, Run]:
    if name == "free":
        return measure(url, deltas, rounds)
    if name == "busy":
        with busy_cores():
            return measure(url, deltas, rounds)
    if name == "pinned":
        # The whole run on core 0, the recorder child with it (affinity is inherited).
        command = [
            "taskset",
            "-c",
            "0",
            sys.executable,
            __file__,
            "--conditions",
            "pinned-here",
            "--events",
            str(deltas),
            "--rounds",
            str(rounds),
            "--json",
        ]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        return {k: Run(**v) for k, v in json.loads(out.splitlines()[-1]).items()}
    if name == "pinned-here":
        return measure(url, deltas, rounds)
    raise SystemExit(f"unknown condition {name!r}: free, busy, pinned")


_LABELS = {
    "free": "a free core (nothing else running)",
    "busy": f"every core busy ({os.cpu_count()} CPU hogs running)",
    "pinned": "one core for everything (taskset -c 0)",
}


def report(name: str, results: dict[str, Run]) -> None:
    sdk = results["sdk"]
    n = sdk.events
    print(f"\n{_LABELS.get(name, name)}: {n} events per stream, medians")
    print(
        "                       consume    ratio  client CPU   sink CPU  total CPU  "
        "recording CPU    drain"
    )
    print(
        f"  SDK alone          {sdk.consume * 1e3:7.1f} ms   1.000x  "
        f"{sdk.client_cpu * 1e3:7.1f} ms          -  {sdk.total_cpu * 1e3:6.1f} ms"
    )
    for writer in SINKS:
        r = results[writer]
        recording = r.total_cpu - sdk.total_cpu
        print(
            f"  writer={writer!r:9}   {r.consume * 1e3:7.1f} ms  {r.consume / sdk.consume:6.3f}x  "
            f"{r.client_cpu * 1e3:7.1f} ms {r.sink_cpu * 1e3:7.1f} ms  "
            f"{r.total_cpu * 1e3:6.1f} ms  {recording / sdk.total_cpu * 100:8.1f} %  "
            f"{r.drain * 1e3:6.1f} ms"
        )
    print(
        f"  first event: SDK alone {sdk.first * 1e3:.2f} ms, "
        + ", ".join(f"writer={w!r} {results[w].first * 1e3:.2f} ms" for w in SINKS)
    )
    print("  per event (us): SDK alone %.1f" % (sdk.total_cpu / n * 1e6))
    for writer in SINKS:
        r = results[writer]
        print(
            f"    writer={writer!r:9}  client +{(r.client_cpu - sdk.client_cpu) / n * 1e6:5.1f}"
            f"  sink {r.sink_cpu / n * 1e6:5.1f}"
            f"  recording total {(r.total_cpu - sdk.total_cpu) / n * 1e6:5.1f}"
        )


def extras(url: str) -> None:
    """Opening a session, time to first event, peak memory, vcrpy: with a free core."""
    start = time.perf_counter()
    CaptureSession(url, "warm", writer="process").close()  # the child is running already
    open_warm = time.perf_counter() - start
    start = time.perf_counter()
    CaptureSession(url, "thread").close()
    open_thread = time.perf_counter() - start
    cold = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, sys.argv[1]); "
            "from recorder.capture import CaptureSession; t = time.perf_counter(); "
            "CaptureSession(sys.argv[2], 'cold', writer='process').close(); "
            "print(time.perf_counter() - t)",
            str(Path(__file__).resolve().parent.parent),
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    open_cold = float(cold.stdout.split()[-1])
    print("\nopening (and closing) a session")
    print(f"  writer='thread'                                {open_thread * 1e3:7.1f} ms")
    print(f"  writer='process', first: starts the child      {open_cold * 1e3:7.1f} ms")
    print(f"  writer='process', next ones: child running     {open_warm * 1e3:7.1f} ms")
    print("peak RSS while recording 5,000 vs 50,000 events (flat: nothing buffers the stream)")
    for writer in SINKS:
        small = peak_rss(url, 5000, writer)
        large = peak_rss(url, 50000, writer)
        print(
            f"  writer={writer!r:9} client {small[0] / 1e6:6.1f} -> {large[0] / 1e6:6.1f} MB"
            f" ({large[0] / small[0]:.2f}x)"
            + (
                f", child {small[1] / 1e6:6.1f} -> {large[1] / 1e6:6.1f} MB"
                f" ({large[1] / small[1]:.2f}x)"
                if small[1]
                else ""
            )
        )
    with tempfile.TemporaryDirectory() as tmp:
        vcr = statistics.median(vcr_run(5000, Path(tmp) / "cassette.yaml") for _ in range(3))
    print(f"vcrpy recording the same stream (whole body at once): consume {vcr * 1e3:.1f} ms")


def vcr_run(deltas: int, cassette: Path) -> float:
    import vcr

    cassette.unlink(missing_ok=True)
    with vcr.use_cassette(str(cassette), record_mode="all"):
        return plain_run(deltas).consume


def peak_rss(url: str, deltas: int, writer: WriterMode) -> tuple[int, int]:
    """Peak resident memory (bytes) of a fresh client process recording one stream, and
    of its recorder child (0 for the thread sink)."""
    bench = str(Path(__file__).resolve().parent)
    code = (
        f"import resource, sys; sys.path.insert(0, {bench!r}); import record as b; "
        "from recorder.capture.child import _stop_shared; "
        f"b.recorded_run({url!r}, {deltas}, {writer!r}); _stop_shared(); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    client, child = out.stdout.split()[-2:]
    return int(client) * 1024, int(child) * 1024 if writer == "process" else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="code delta events per stream")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--conditions", default="free,busy,pinned")
    parser.add_argument("--no-extras", action="store_true", help="skip opening, memory, vcrpy")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if "pinned" in names and shutil.which("taskset") is None:
        print("taskset not found: skipping the pinned condition", file=sys.stderr)
        names.remove("pinned")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        migrate.upgrade(url)
        results = {name: condition(name, url, args.events, args.rounds) for name in names}
        if args.json:
            print(json.dumps({k: asdict(v) for k, v in results[names[0]].items()}))
            return
        for name, result in results.items():
            report(name, result)
        if not args.no_extras:
            extras(url)
        with EventStore.open(url) as store:
            print(f"\n({store.last_position()} events stored in all)")


if __name__ == "__main__":
    main()

"""Benchmark: replaying a >= 5,000-event tape into the OpenAI SDK.

Measured in one run, against baselines in the same run:

* **baseline** — the SDK parsing the same bytes from an in-memory
  ``httpx2.MockTransport`` (the whole body handed over at once): the least
  any replay can cost, since the SDK's own parsing is the bulk of the work.
* **codetape** — ``ReplayTransport`` serving the tape frame by frame (the tape
  is loaded once beforehand; a fresh transport is built for every run, so
  matching is included).
* **vcrpy** — vcrpy replaying a cassette of the same stream through its
  ``httpx2`` patch (record mode ``none``).

Each run is ``client.responses.create(stream=True)`` iterated to the end.
Reported: median total time, median time to first event, and the ratio of
codetape to the baseline (target <= 1.10x). Runs are interleaved so that
drift in the machine affects all three alike.

The tape is built from a real fixture (openai-dotnet's code interpreter
stream): its ``code_interpreter_call_code.delta`` run is repeated until the
stream has >= 5,000 events, and ``sequence_number`` is renumbered.

Usage: ``python bench/replay.py [--events 5000] [--runs 15]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx2
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[1]
# First on the path: this script's own directory would otherwise make
# `import replay` import this file (bench/replay.py) instead of the package.
sys.path.insert(0, str(ROOT))

from recorder.events import Event, EventKind  # noqa: E402
from recorder.sse import split_sse  # noqa: E402
from recorder.tape import read_tape, write_tape  # noqa: E402
from replay import ReplayTransport, load_tape  # noqa: E402
from replay.source import Recording  # noqa: E402

SOURCE = (
    ROOT / "fixtures/realdata/openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
)
BASE = "https://api.openai.com/v1"


def build_tape(path: Path, events: int) -> Recording:
    """A real stream with its code-delta run repeated to reach ``events`` SSE events."""
    original = read_tape(SOURCE)
    frames = [ev.payload for ev in original if ev.kind is EventKind.SSE]
    types = [ev.sse_type for ev in original if ev.kind is EventKind.SSE]
    delta = "response.code_interpreter_call_code.delta"
    first = types.index(delta)
    last = len(types) - 1 - types[::-1].index(delta)
    run = frames[first : last + 1]
    copies = max(1, -(-(events - (len(frames) - len(run))) // len(run)))
    body_frames = frames[:first] + run * copies + frames[last + 1 :]
    renumbered = []
    for n, raw in enumerate(body_frames):
        event_line, _, data = raw.partition(b"\ndata: ")
        obj = json.loads(data)
        obj["sequence_number"] = n
        renumbered.append(event_line + b"\ndata: " + json.dumps(obj).encode() + b"\n\n")
    body = b"".join(renumbered)
    head = [ev for ev in original if ev.kind in (EventKind.SESSION_OPEN, EventKind.REQUEST)]
    head_ev = next(ev for ev in original if ev.kind is EventKind.RESPONSE_HEAD)
    sid, xid = head_ev.session_id, head_ev.exchange_id
    out: list[Event] = [*head, head_ev]
    seq = 2
    for frame in split_sse(body):
        out.append(
            Event(
                sid,
                EventKind.SSE,
                seq,
                xid,
                recorded_at_ns=head_ev.recorded_at_ns,
                payload=frame.raw,
                sse_event=frame.event,
                sse_type=frame.type,
                sequence_number=frame.sequence_number,
            )
        )
        seq += 1
    out.append(Event(sid, EventKind.EXCHANGE_END, seq, xid, meta={"outcome": "completed"}))
    out.append(Event(sid, EventKind.SESSION_CLOSE, 1))
    write_tape(out, path)
    return load_tape(path)


def _client(transport: httpx2.BaseTransport | None = None) -> OpenAI:
    http = httpx2.Client(transport=transport) if transport is not None else httpx2.Client()
    return OpenAI(api_key="bench", base_url=BASE, max_retries=0, http_client=http)


def _consume(client: OpenAI, kwargs: dict[str, object]) -> tuple[float, float, int]:
    """Total seconds, seconds to first event, events."""
    start = time.perf_counter()
    first = 0.0
    count = 0
    with client.responses.create(**kwargs) as stream:  # type: ignore[call-overload]
        for _ in stream:
            if count == 0:
                first = time.perf_counter() - start
            count += 1
    return time.perf_counter() - start, first, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tape = Path(tmp) / "bench.jsonl"
        t0 = time.perf_counter()
        build_tape(tape, args.events)
        t1 = time.perf_counter()
        recording = load_tape(tape)
        load_s = time.perf_counter() - t1
        exchange = recording.exchanges[0]
        body = exchange.body
        kwargs = json.loads(exchange.request_body)
        n_events = len(exchange.chunks)
        headers = exchange.replay_headers()

        def baseline() -> tuple[float, float, int]:
            def handler(request: httpx2.Request) -> httpx2.Response:
                return httpx2.Response(200, headers=headers, content=body)

            with _client(httpx2.MockTransport(handler)) as client:
                return _consume(client, kwargs)

        def codetape() -> tuple[float, float, int]:
            with _client(ReplayTransport(recording)) as client:
                return _consume(client, kwargs)

        cassette = Path(tmp) / "cassette.yaml"
        import vcr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Record the cassette once from the in-memory transport (vcrpy patches it).
            with vcr.use_cassette(str(cassette), record_mode="once"):
                baseline()

        def vcrpy() -> tuple[float, float, int]:
            with (
                warnings.catch_warnings(),
                vcr.use_cassette(str(cassette), record_mode="none"),
                _client() as client,
            ):
                warnings.simplefilter("ignore")
                return _consume(client, kwargs)

        contenders: dict[str, Callable[[], tuple[float, float, int]]] = {
            "baseline (MockTransport, in-memory bytes)": baseline,
            "codetape ReplayTransport": codetape,
            "vcrpy (record_mode=none)": vcrpy,
        }
        for fn in contenders.values():  # warm-up: imports, model classes
            fn()
        totals: dict[str, list[float]] = {name: [] for name in contenders}
        firsts: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.runs):
            for name, fn in contenders.items():
                total, first, count = fn()
                assert count == n_events, (name, count, n_events)
                totals[name].append(total)
                firsts[name].append(first)

    print(
        f"tape: {n_events} SSE events, {len(body):,} bytes "
        f"(built in {t1 - t0:.2f} s, loaded in {load_s * 1000:.0f} ms); "
        f"{args.runs} interleaved runs, medians"
    )
    base = statistics.median(totals["baseline (MockTransport, in-memory bytes)"])
    print(f"{'':44} {'total ms':>9} {'events/s':>10} {'first event ms':>15} {'vs baseline':>12}")
    for name in contenders:
        total = statistics.median(totals[name])
        first = statistics.median(firsts[name])
        print(
            f"{name:44} {total * 1000:9.1f} {n_events / total:10,.0f} {first * 1000:15.2f} "
            f"{total / base:11.2f}x"
        )
    ratio = statistics.median(totals["codetape ReplayTransport"]) / base
    verdict = "meets" if ratio <= 1.10 else "misses"
    print(f"codetape / baseline = {ratio:.3f}x ({verdict} the <= 1.10x target)")


if __name__ == "__main__":
    main()

"""Benchmark: what ``codetape proxy`` costs a client against a bare pass-through proxy.

Run: ``python bench/proxy.py [--rounds 7] [--busy] [--concurrent 64]``.

Three paths, interleaved round by round, each the real ``openai`` SDK
(``responses.create(stream=True)``, iterated to the end) reading a code
interpreter stream from a local upstream on 127.0.0.1:

* **direct**: the SDK talks to the upstream;
* **bare**: through a bare pass-through proxy (uvicorn + ``httpx2``, streaming
  each chunk on as it comes, recording nothing): the baseline;
* **codetape**: through ``codetape proxy`` (the real command, recording into a
  SQLite file).

Two streams: the openai-dotnet ``CodeInterpreterToolStreaming`` recording
(real frames) sent at 4 ms per event, which measures *delivery lag* (when the
SDK yields event *k* minus when the upstream sent it: both read
``time.monotonic_ns()``, one clock for every process on Linux), and a
**synthetic** long stream (that recording's frames repeated, sequence numbers
renumbered) sent with no delay, which measures throughput. Every process's
CPU is counted (client, upstream, the proxy and its children, read from
``/proc``). ``--busy`` runs the whole benchmark again with a CPU hog on every
core, as on a CI runner. ``--concurrent N`` then streams N paced streams at
once through one ``codetape proxy`` (and through the bare one), read as raw
HTTP frames so the client is not the bottleneck (``--concurrent-client sdk``
reads them with the SDK), reports the lag's p50/p90/p99 and the proxy's CPU,
and checks in the database that every exchange is whole.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from fake_upstream import free_port, read_body  # noqa: E402
from load import busy_cores  # noqa: E402

TAPE = (
    ROOT / "fixtures/realdata/openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
)
TICKS = os.sysconf("SC_CLK_TCK")

# -- the two servers, run as separate processes (``--serve-upstream`` / ``--serve-bare``) ----


def real_frames() -> list[bytes]:
    """The SSE frames of the fixture's one streamed response, as recorded."""
    import base64

    frames = []
    for line in TAPE.read_text().splitlines():
        event = json.loads(line)
        if event.get("kind") == "sse":
            frames.append(
                event["text"].encode() if "text" in event else base64.b64decode(event["b64"])
            )
    return frames


def synthetic_long(frames: list[bytes], copies: int) -> list[bytes]:
    """``copies`` of the real frames, ``sequence_number`` renumbered: a synthetic long stream.

    Only the last copy's terminal event is kept, so the SDK reads one response.
    """
    out: list[bytes] = []
    seq = 0
    for copy in range(copies):
        for frame in frames:
            head, _, data = frame.partition(b"data: ")
            obj = json.loads(data)
            if obj.get("type") == "response.completed" and copy < copies - 1:
                continue
            if "sequence_number" in obj:
                obj["sequence_number"] = seq
            seq += 1
            out.append(head + b"data: " + json.dumps(obj).encode() + b"\n\n")
    return out


def serve_upstream(port: int) -> None:
    """The upstream: streams the requested stream, noting when each frame was sent."""
    import uvicorn

    streams = {"real": real_frames()}
    streams["long"] = synthetic_long(streams["real"], 6)
    sent: dict[str, list[int]] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        query = dict(
            part.split("=", 1) for part in scope["query_string"].decode().split("&") if part
        )
        if scope["path"] == "/__sent":
            body = json.dumps(sent.pop(query["tag"], [])).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        frames = streams[query.get("stream", "real")]
        delay = float(query.get("delay_ms", "0")) / 1000
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        times = []
        for frame in frames:
            if delay:
                await asyncio.sleep(delay)
            times.append(time.monotonic_ns())
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        if "tag" in query:
            sent[query["tag"]] = times

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


def serve_bare(port: int, upstream: str) -> None:
    """A bare pass-through proxy: the least a streaming proxy must do (the baseline)."""
    import uvicorn

    client = httpx2.AsyncClient(base_url=upstream, timeout=600)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        target = scope["raw_path"].decode()
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"host", b"content-length")]
        request = client.build_request(scope["method"], target, headers=headers, content=body)
        response = await client.send(request, stream=True)
        out = [(k.encode(), v.encode()) for k, v in response.headers.multi_items()]
        out = [h for h in out if h[0].lower() not in (b"transfer-encoding", b"connection")]
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        await response.aclose()

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


# -- the client side ------------------------------------------------------------------------


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and every live descendant, plus reaped children."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        stats[int(entry)] = fields
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        fields = stats.get(p)
        if fields is None:
            continue
        # utime, stime, cutime, cstime (fields 14-17 of stat, 12-15 after the name)
        total += sum(int(v) for v in fields[11:15])
        todo.extend(c for c, parent in parents.items() if parent == p)
    return total / TICKS


@dataclass
class Run:
    wall: float
    events: int
    lags_ms: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)


class Bench:
    def __init__(self, tmp: str, writer: str = "auto") -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        up_port, bare_port, ct_port = free_port(), free_port(), free_port()
        self.upstream = f"http://127.0.0.1:{up_port}"
        self.up = self._spawn([sys.executable, __file__, "--serve-upstream", str(up_port)])
        wait_listening(up_port, self.up)
        self.bare = self._spawn(
            [sys.executable, __file__, "--serve-bare", str(bare_port), self.upstream]
        )
        wait_listening(bare_port, self.bare)
        self.db = f"sqlite:///{tmp}/proxy.db"
        codetape = [str(Path(sys.executable).with_name("codetape"))]
        subprocess.run([*codetape, "db", "upgrade", "--db", self.db], check=True, cwd=ROOT)
        self.ct = self._spawn(
            [
                *codetape,
                "proxy",
                "--listen",
                f"127.0.0.1:{ct_port}",
                "--upstream",
                self.upstream,
                "--session",
                "bench-proxy",
                "--db",
                self.db,
                "--writer",
                writer,
            ]
        )
        wait_listening(ct_port, self.ct)
        self.bases = {
            "direct": self.upstream + "/v1",
            "bare": f"http://127.0.0.1:{bare_port}/v1",
            "codetape": f"http://127.0.0.1:{ct_port}/v1",
        }
        self.server_pids = {"upstream": self.up.pid, "bare": self.bare.pid, "codetape": self.ct.pid}
        self.served = 0  # exchanges sent through codetape proxy
        self.parts = ("client", *self.server_pids)

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def sent_times(self, tag: str) -> list[int]:
        return list(httpx2.get(self.upstream + "/__sent", params={"tag": tag}).json())

    def cpu_snapshot(self) -> dict[str, float]:
        snap = {name: tree_cpu(pid) for name, pid in self.server_pids.items()}
        snap["client"] = time.process_time()
        return snap

    def one(self, path: str, stream: str, delay_ms: float) -> Run:
        query = {"stream": stream, "delay_ms": str(delay_ms), "tag": "one"}
        self.served += path == "codetape"
        before = self.cpu_snapshot()
        start = time.perf_counter()
        received: list[int] = []
        with openai.OpenAI(api_key="sk-bench", base_url=self.bases[path], max_retries=0) as client:
            events = client.responses.create(
                model="gpt-4o-mini", input="x", stream=True, extra_query=query
            )
            for _event in events:
                received.append(time.monotonic_ns())
        wall = time.perf_counter() - start
        after = self.cpu_snapshot()
        cpu = {k: after[k] - before[k] for k in before}
        sent = self.sent_times("one")
        lags = [(r - s) / 1e6 for r, s in zip(received, sent, strict=False)]
        return Run(wall, len(received), lags, cpu)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(bench: Bench, rounds: int, label: str) -> None:
    paths = ("direct", "bare", "codetape")
    for stream, delay in (("long", 0.0), ("real", 4.0)):
        runs: dict[str, list[Run]] = {p: [] for p in paths}
        for _ in range(rounds):
            for path in paths:
                runs[path].append(bench.one(path, stream, delay))
        events = runs["direct"][0].events
        what = f"synthetic long stream, {events} events, no delay"
        if stream == "real":
            what = f"real code interpreter stream, {events} events, 4 ms apart"
        print(f"\n[{label}] {what} ({rounds} interleaved rounds, medians)")
        print(
            f"  {'path':9} {'wall ms':>9} {'vs direct':>9} {'vs bare':>8} "
            f"{'lag p50':>8} {'p90':>7} {'max':>7}  CPU ms: client / upstream / proxy (+children)"
        )
        base = {p: statistics.median(r.wall for r in runs[p]) for p in paths}
        for path in paths:
            # Unpaced, the upstream sends everything at once and lag only measures the
            # SDK's parsing backlog: shown for the paced stream alone.
            lags = [lag for r in runs[path] for lag in r.lags_ms] if delay else [0.0]
            cpu = {
                k: statistics.median(r.cpu[k] for r in runs[path]) * 1e3 for k in runs[path][0].cpu
            }
            proxy_cpu = cpu.get(path, 0.0) if path != "direct" else 0.0
            print(
                f"  {path:9} {base[path] * 1e3:9.1f} {base[path] / base['direct']:8.2f}x "
                f"{base[path] / base['bare']:7.2f}x {pct(lags, 0.5):8.1f} {pct(lags, 0.9):7.1f} "
                f"{max(lags):7.1f}  {cpu['client']:.0f} / {cpu['upstream']:.0f} / {proxy_cpu:.0f}"
            )


async def concurrent(bench: Bench, path: str, n: int, client: str) -> tuple[list[float], int]:
    """N paced streams at once through ``path``; (lags in ms, events received).

    ``client="raw"`` reads each stream with ``httpx2`` and stamps a frame when
    its blank line arrives: cheap enough that 64 streams do not saturate the
    client, so the lag is the proxy's. ``client="sdk"`` iterates the SDK's
    events instead, which on a small machine measures the SDK's parsing backlog
    as much as the proxy (64 streams at 4 ms per event are ~16,000 events/s).
    """

    async def one_sdk(k: int, c: openai.AsyncOpenAI) -> list[int]:
        received = []
        query = {"delay_ms": "4", "tag": f"{path}-{k}"}
        stream = await c.responses.create(
            model="gpt-4o-mini", input=f"x{k}", stream=True, extra_query=query
        )
        async for _event in stream:
            received.append(time.monotonic_ns())
        return received

    async def one_raw(k: int, c: httpx2.AsyncClient) -> list[int]:
        received: list[int] = []
        params = {"delay_ms": "4", "tag": f"{path}-{k}"}
        body = {"model": "gpt-4o-mini", "input": f"x{k}", "stream": True}
        tail = b""
        async with c.stream("POST", "/responses", params=params, json=body) as response:
            async for chunk in response.aiter_raw():
                now = time.monotonic_ns()
                data = tail + chunk
                received.extend([now] * data.count(b"\n\n"))
                tail = data[data.rfind(b"\n\n") + 2 :] if b"\n\n" in data else data
        return received

    async def lags_of(k: int, received: list[int]) -> list[float]:
        sent = await asyncio.to_thread(bench.sent_times, f"{path}-{k}")
        return [(r - s) / 1e6 for r, s in zip(received, sent, strict=False)]

    if client == "sdk":
        async with openai.AsyncOpenAI(
            api_key="sk-bench", base_url=bench.bases[path], max_retries=0
        ) as c:
            got = await asyncio.gather(*(one_sdk(k, c) for k in range(n)))
    else:
        limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
        headers = {"authorization": "Bearer sk-bench"}
        async with httpx2.AsyncClient(
            base_url=bench.bases[path], timeout=600, limits=limits, headers=headers
        ) as c:
            got = await asyncio.gather(*(one_raw(k, c) for k in range(n)))
    results = [await lags_of(k, received) for k, received in enumerate(got)]
    lags = [lag for r in results for lag in r]
    return lags, len(lags)


def check_recording(db: str, lengths: set[int], expected: int) -> str:
    """Whether every exchange the proxy served is in the log, whole."""
    from recorder.store import EventStore

    with EventStore.open(db) as store:
        session = store.find_session("bench-proxy")
        exchanges = store.exchanges(session.id)
        whole = [x for x in exchanges if x.outcome == "completed" and x.sse_events in lengths]
        ok = store.verify().ok
    return (
        f"{len(exchanges)} exchanges recorded of {expected} served, {len(whole)} whole "
        f"(completed, every frame), verify {'ok' if ok else 'FAILED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--busy", action="store_true", help="also measure with every core busy")
    parser.add_argument("--concurrent", type=int, default=64, help="streams at once (0: skip)")
    parser.add_argument(
        "--concurrent-client",
        default="raw",
        choices=("raw", "sdk"),
        help="how the concurrent streams are read: raw HTTP frames (default) or the SDK",
    )
    parser.add_argument(
        "--writer", default="auto", choices=("auto", "thread", "process"), help="the proxy's sink"
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), args.serve_bare[1])
        return
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(tmp, args.writer)
        try:
            for path in ("direct", "bare", "codetape"):
                bench.one(path, "real", 0)  # warm up connections, imports, the recorder
            report(bench, args.rounds, "idle")
            if args.busy:
                with busy_cores(True):
                    report(bench, args.rounds, f"{os.cpu_count()} cores busy")
            if args.concurrent:
                for path in ("bare", "codetape"):
                    before = bench.cpu_snapshot()
                    start = time.perf_counter()
                    lags, events = asyncio.run(
                        concurrent(bench, path, args.concurrent, args.concurrent_client)
                    )
                    wall = time.perf_counter() - start
                    after = bench.cpu_snapshot()
                    proxy_cpu = after[path] - before[path]
                    bench.served += args.concurrent * (path == "codetape")
                    print(
                        f"\n{args.concurrent} concurrent paced streams through {path} "
                        f"({args.concurrent_client} clients): {events} events in {wall:.1f} s, "
                        f"lag p50 {pct(lags, 0.5):.1f} ms, p90 {pct(lags, 0.9):.1f} ms, "
                        f"p99 {pct(lags, 0.99):.1f} ms, max {max(lags):.1f} ms; "
                        f"proxy CPU {proxy_cpu:.2f} s"
                    )
        finally:
            bench.close()
        if args.concurrent:
            # Every exchange through codetape is checked, the long streams' too (their
            # frame count differs: they show as recorded but not "whole" of the real length).
            lengths = {len(real_frames()), len(synthetic_long(real_frames(), 6))}
            print("codetape database: " + check_recording(bench.db, lengths, bench.served))


if __name__ == "__main__":
    main()

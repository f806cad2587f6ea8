"""A live recording while someone else holds the log's lock on PostgreSQL.

Usage: python bench/locked.py [--hold 20] [--streams 30] [--lock table|advisory]
                              [--writers thread,process] [--pg-url URL] [--busy]

The openai SDK consumes ``--streams`` streamed responses in a row, each the
real code interpreter recording of the fixtures
(``CodeInterpreterToolStreaming.jsonl``, 491 SSE frames), served in process
by ``httpx2.MockTransport`` with no latency, and recorded into a throwaway
PostgreSQL log (``--pg-url``: an existing server's admin URL instead) through
``CaptureSession``. Each sink (``writer=``) runs twice: with nothing else on
the log, then with another connection holding ``LOCK TABLE events IN ACCESS
EXCLUSIVE MODE`` (or, ``--lock advisory``, the appends' own advisory lock)
from just before the first request until ``--hold`` seconds later.

Printed per run (after one unmeasured stream per sink, which pays for
imports and first connections): the SDK's events/s (events read over the
time from the first request to the last event), the longest wait between
two events the SDK read (the stall) and the 99th percentile of those
waits, whether the SDK had every event before the lock was released, then
how long after the release the store had everything, the events stored,
and ``verify``; then the CPU every process spent from the first request
until the store had everything, in microseconds per stored event: this
process (the SDK, the capture and, for ``writer="thread"``, the writer
thread), the recorder child (``writer="process"``), and the PostgreSQL
server (all its processes, the lock holder's backend included: see
bench/cpu.py), and their total. ``--busy`` runs everything with a CPU hog
on every core (bench/load.py; their CPU is not counted).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import psycopg  # noqa: E402
from cpu import postmaster_pid, process_cpu, server_cpu  # noqa: E402
from fake_upstream import Upstream, load_tape  # noqa: E402
from load import busy_cores  # noqa: E402
from pg import pg_databases  # noqa: E402

from recorder.capture import CaptureSession  # noqa: E402
from recorder.capture.child import shared_channel  # noqa: E402
from recorder.capture.session import WriterMode  # noqa: E402
from recorder.client import record  # noqa: E402
from recorder.store import EventStore, migrate  # noqa: E402
from recorder.store.store import APPEND_LOCK  # noqa: E402

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
BASE = "https://api.openai.com/v1"


@dataclass
class Outcome:
    sdk_events: int
    sdk_rate: float
    stall: float
    p99: float
    before_release: bool | None
    stored_after_release: float | None
    stored: int
    verified: bool
    client_cpu: float
    child_cpu: float
    server_cpu: float

    def per_event_us(self, seconds: float) -> float:
        return seconds / max(self.stored, 1) * 1e6


class Holder:
    """Another connection holding the lock, from :meth:`take` for ``hold`` seconds."""

    def __init__(self, url: str, how: str, hold: float) -> None:
        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        self.how, self.hold = how, hold
        self.released_at: float | None = None
        self._thread = threading.Thread(target=self._release_later)

    def take(self) -> None:
        if self.how == "advisory":
            self.conn.execute(f"SELECT pg_advisory_xact_lock({APPEND_LOCK})")
        else:
            self.conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        self._thread.start()

    def _release_later(self) -> None:
        time.sleep(self.hold)
        self.conn.commit()
        self.released_at = time.monotonic()

    def join(self) -> None:
        self._thread.join()
        self.conn.close()


def run(
    url: str, writer: WriterMode, streams: int, holder: Holder | None, postmaster: int
) -> Outcome:
    scripts = load_tape(ROOT / "fixtures" / "realdata" / CI_STREAM) * streams
    upstream = Upstream(scripts, any_path=True)
    with EventStore.open(url) as store:
        before = store.last_position()
        session = CaptureSession(store, f"synthetic-locked-{writer}", writer=writer)
        assert session.flush(60)
        child = shared_channel().pid if writer == "process" else None
        child0 = 0.0 if child is None else process_cpu(child)
        server0, client0 = server_cpu(postmaster), time.process_time()
        if holder is not None:
            holder.take()
        times: list[float] = []
        start = time.monotonic()
        with record(
            store, session, transport=upstream.transport(), api_key="k", base_url=BASE
        ) as client:
            for _ in range(streams):
                for _event in client.responses.create(model="m", input="x", stream=True):
                    times.append(time.monotonic())
        sdk_done = times[-1]
        # Stored, not only handed to the recorder child: what the CPU counts.
        assert session.flush(120)
        session.close()
        stored_at = time.monotonic()
        client_cpu = time.process_time() - client0
        server_used = server_cpu(postmaster) - server0
        child_cpu = 0.0 if child is None else process_cpu(child) - child0
        if child is not None and shared_channel().pid != child:
            raise SystemExit("the recorder child was replaced during the run: CPU not counted")
        if holder is not None:
            holder.join()
        gaps = [b - a for a, b in zip([start, *times], times, strict=False)]
        released = holder.released_at if holder is not None else None
        report = store.verify()
        return Outcome(
            sdk_events=len(times),
            sdk_rate=len(times) / (sdk_done - start),
            stall=max(gaps),
            p99=sorted(gaps)[int(len(gaps) * 0.99)],
            before_release=None if released is None else sdk_done < released,
            stored_after_release=None if released is None else stored_at - released,
            stored=store.last_position() - before,
            verified=report.ok and report.capture_gaps == 0 and not report.open_exchanges,
            client_cpu=client_cpu,
            child_cpu=child_cpu,
            server_cpu=server_used,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--streams", type=int, default=30, help="responses (default 30)")
    parser.add_argument("--lock", choices=("table", "advisory"), default="table")
    parser.add_argument("--writers", default="thread,process", help="sinks (default both)")
    parser.add_argument("--pg-url", help="an existing server's admin URL (default: throwaway)")
    parser.add_argument("--busy", action="store_true", help="a CPU hog on every core")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"{os.cpu_count()} cores, load average {load:.1f}; {args.streams} x 491-frame streams; "
        f"lock: {args.lock}, held {args.hold:g} s"
        + ("; every core busy (a CPU hog per core)" if args.busy else "")
    )
    with pg_databases(args.pg_url, "locked_bench") as dbs:
        if dbs is None:
            raise SystemExit("no PostgreSQL: nothing to measure")
        url = dbs["locked_bench"]
        migrate.upgrade(url)
        postmaster = postmaster_pid(url)
        with busy_cores(args.busy):
            for writer in args.writers.split(","):
                # Warm: imports, first connections, the recorder child.
                run(url, writer, 1, None, postmaster)  # type: ignore[arg-type]
            print(
                f"{'sink':<8} {'lock':<6} | {'SDK ev/s':>9} {'max stall':>10} {'p99 wait':>9} "
                f"{'SDK done first':>14} | "
                f"{'stored after release':>20} {'events stored':>13} {'verify':>6} | "
                "CPU us/event: client  child server  total"
            )
            for writer in args.writers.split(","):
                for locked in (False, True):
                    holder = Holder(url, args.lock, args.hold) if locked else None
                    o = run(url, writer, args.streams, holder, postmaster)  # type: ignore[arg-type]
                    first = (
                        "-" if o.before_release is None else ("yes" if o.before_release else "NO")
                    )
                    after = (
                        "-" if o.stored_after_release is None else f"{o.stored_after_release:.2f} s"
                    )
                    total = o.client_cpu + o.child_cpu + o.server_cpu
                    print(
                        f"{writer:<8} {'held' if locked else 'none':<6} | {o.sdk_rate:>9,.0f} "
                        f"{o.stall * 1000:>7.1f} ms {o.p99 * 1000:>6.2f} ms {first:>14} | "
                        f"{after:>20} {o.stored:>13,} "
                        f"{'ok' if o.verified else 'FAILED':>6} | "
                        f"{'':>12} {o.per_event_us(o.client_cpu):6.1f} "
                        f"{o.per_event_us(o.child_cpu):6.1f} {o.per_event_us(o.server_cpu):6.1f} "
                        f"{o.per_event_us(total):6.1f}"
                    )
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Many writers on one PostgreSQL log: codetape's append vs eventsourcing and raw COPY.

Usage: python bench/writers.py [--seconds S] [--procs 1,2,4] [--batches 500,10]
                               [--rounds N] [--pg-url URL] [--busy]

Each writer is its own process (spawned, so nothing is shared but the
server) that appends batches of fixture-shaped events (payloads are the SSE
frames of the fixture tapes, in order; sessions are named
``synthetic-writers-*``) to one database for ``--seconds``, all starting
together. Three systems take turns on the same throwaway cluster, in one run:

* codetape: ``EventStore.append``, which gives every event a global position
  and a hash chained to the one before, under one global lock;
* the ``eventsourcing`` library's ``PostgresApplicationRecorder`` (9.5), which
  also takes ``LOCK TABLE ... IN EXCLUSIVE MODE`` to give every event a global
  notification id, but keeps no chain;
* raw ``psycopg`` ``COPY`` of the same payloads into a plain table with a
  ``bigserial`` key: no order beyond the sequence, no lock, no chain (the
  ceiling).

Printed per batch size and writer count: events/s for each system, codetape's
ratio to raw COPY and to eventsourcing, and how codetape's rate grows from one
writer. CPU is counted for every process involved: the writers' own (their
rusage) and the server's (the run time of this server's postmaster and
of its processes from ``/proc``, before and after, exited backends included
through the postmaster's children times; not counted for a server on
another machine), as microseconds per event. ``--busy`` runs it
all again with a CPU hog on every core (their CPU is not counted).

``--rounds N`` sweeps the writer counts N times, one after another, and
prints medians: each ratio is taken within a round (four writers against
the one writer of the same round) before the median, so a machine whose
speed drifts over minutes (a shared VM) skews a ratio only as far as it
drifts within one round. The per-round ratios to one writer are printed too.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cpu import postmaster_pid, server_cpu  # noqa: E402
from load import busy_cores  # noqa: E402
from pg import pg_databases  # noqa: E402

SYSTEMS = ("codetape", "eventsourcing", "copy")


def _frames() -> list[bytes]:
    from recorder.events import EventKind
    from recorder.tape import read_tape

    frames: list[bytes] = []
    for tape in sorted((ROOT / "fixtures" / "realdata").rglob("*.jsonl")):
        frames += [e.payload for e in read_tape(tape) if e.kind is EventKind.SSE]
    return frames


def _postmaster(url: str) -> int | None:
    """The pid of the server behind ``url``, if it runs on this machine (else None)."""
    try:
        return postmaster_pid(url)
    except OSError:  # its backend is not a process here: another machine's server
        return None


def _codetape_writer(url: str, batch: int, frames: list[bytes]):  # type: ignore[no-untyped-def]
    from recorder.events import Event, EventKind, new_id
    from recorder.store import EventStore

    store = EventStore.open(url)
    sid, xid = new_id(), new_id()
    store.append(
        [
            Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": f"synthetic-writers-{sid[:8]}"}),
            Event(sid, EventKind.REQUEST, 0, xid, payload=b"{}", meta={"method": "POST"}),
            Event(sid, EventKind.RESPONSE_HEAD, 1, xid, meta={"status": 200}),
        ]
    )
    state = {"seq": 2, "i": 0}

    def write() -> int:
        events = []
        for _ in range(batch):
            events.append(
                Event(
                    sid,
                    EventKind.SSE,
                    state["seq"],
                    xid,
                    offset_ns=state["seq"] * 1000,
                    payload=frames[state["i"] % len(frames)],
                    sse_type="response.output_text.delta",
                )
            )
            state["seq"] += 1
            state["i"] += 1
        store.append(events)
        return batch

    return write, store.close


def _datastore(url: str):  # type: ignore[no-untyped-def]
    """The eventsourcing library's connection pool for the database at ``url``."""
    from eventsourcing.postgres import PostgresDatastore

    parts = urlsplit(url)
    return PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or "",
    )


def _eventsourcing_writer(url: str, batch: int, frames: list[bytes]):  # type: ignore[no-untyped-def]
    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresApplicationRecorder

    datastore = _datastore(url)
    recorder = PostgresApplicationRecorder(datastore)
    originator = uuid.uuid4()
    state = {"version": 1, "i": 0}

    def write() -> int:
        events = []
        for _ in range(batch):
            events.append(
                StoredEvent(
                    originator,
                    state["version"],
                    "response.output_text.delta",
                    frames[state["i"] % len(frames)],
                )
            )
            state["version"] += 1
            state["i"] += 1
        recorder.insert_events(events)
        return batch

    return write, datastore.close


def _copy_writer(url: str, batch: int, frames: list[bytes]):  # type: ignore[no-untyped-def]
    import psycopg

    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    stream = uuid.uuid4().hex
    state = {"seq": 0, "i": 0}

    def write() -> int:
        with (
            conn.cursor() as cur,
            cur.copy("COPY raw_events (stream, seq, type, payload) FROM STDIN") as copy,
        ):
            for _ in range(batch):
                copy.write_row(
                    (
                        stream,
                        state["seq"],
                        "response.output_text.delta",
                        frames[state["i"] % len(frames)],
                    )
                )
                state["seq"] += 1
                state["i"] += 1
        conn.commit()
        return batch

    return write, conn.close


_MAKERS = {
    "codetape": _codetape_writer,
    "eventsourcing": _eventsourcing_writer,
    "copy": _copy_writer,
}


def _worker(system: str, url: str, batch: int, seconds: float, start, results) -> None:  # type: ignore[no-untyped-def]
    frames = _frames()
    write, close = _MAKERS[system](url, batch, frames)
    write()  # warm: connections, prepared statements, caches
    start.wait()
    t0 = time.monotonic()
    r0 = os.times()
    count = 0
    while time.monotonic() - t0 < seconds:
        count += write()
    elapsed = time.monotonic() - t0
    r1 = os.times()
    close()
    results.put((count, elapsed, (r1.user - r0.user) + (r1.system - r0.system)))


@dataclass
class Run:
    events: int
    rate: float
    client_us: float
    server_us: float


def run(
    system: str, url: str, procs: int, batch: int, seconds: float, postmaster: int | None
) -> Run:
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(procs + 1)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(system, url, batch, seconds, start, results))
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    start.wait()
    server0 = server_cpu(postmaster) if postmaster else 0.0
    outcomes = [results.get(timeout=seconds + 120) for _ in workers]
    server1 = server_cpu(postmaster) if postmaster else float("nan")
    for w in workers:
        w.join()
        if w.exitcode != 0:
            raise SystemExit(f"a {system} writer failed (exit {w.exitcode})")
    events = sum(c for c, _, _ in outcomes)
    wall = max(e for _, e, _ in outcomes)
    client = sum(cpu for _, _, cpu in outcomes)
    return Run(events, events / wall, client / events * 1e6, (server1 - server0) / events * 1e6)


def prepare(urls: dict[str, str]) -> None:
    import psycopg
    from eventsourcing.postgres import PostgresApplicationRecorder

    from recorder.store import migrate

    migrate.upgrade(urls["codetape"])
    datastore = _datastore(urls["eventsourcing"])
    PostgresApplicationRecorder(datastore).create_table()
    datastore.close()
    with psycopg.connect(urls["copy"].replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(
            "CREATE TABLE raw_events (id bigserial PRIMARY KEY, stream text NOT NULL, "
            "seq integer NOT NULL, type text NOT NULL, payload bytea NOT NULL, "
            "UNIQUE (stream, seq))"
        )


def _print_sweeps(batch: int, procs: list[int], sweeps: list[dict[int, dict[str, Run]]]) -> None:
    """One line per writer count: medians over the sweeps, ratios taken within each."""
    med = statistics.median
    first = procs[0]
    for n in procs:
        runs = [sweep[n] for sweep in sweeps]
        ct = [r["codetape"] for r in runs]
        es = [r["eventsourcing"].rate for r in runs]
        copy = [r["copy"].rate for r in runs]
        vs_copy = [c.rate / x for c, x in zip(ct, copy, strict=True)]
        vs_es = [c.rate / x for c, x in zip(ct, es, strict=True)]
        vs_one = [sweep[n]["codetape"].rate / sweep[first]["codetape"].rate for sweep in sweeps]
        rounds = "" if len(sweeps) == 1 else "  (" + " ".join(f"{r:.2f}" for r in vs_one) + ")"
        print(
            f"{batch:>5} {n:>7} | {med(c.rate for c in ct):>9,.0f} {med(es):>9,.0f} "
            f"{med(copy):>9,.0f} | {med(vs_copy):>6.2f}x {med(vs_es):>5.2f}x "
            f"{med(vs_one):>5.2f}x | "
            f"{med(c.client_us for c in ct):.1f} + {med(c.server_us for c in ct):.1f}{rounds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per run (default 4)")
    parser.add_argument("--procs", default="1,2,4", help="writer counts (default 1,2,4)")
    parser.add_argument("--batches", default="500,10", help="batch sizes (default 500,10)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="sweeps of the writer counts; medians (default 1)"
    )
    parser.add_argument("--pg-url", help="an existing server's admin URL (default: throwaway)")
    parser.add_argument("--busy", action="store_true", help="also measure with every core busy")
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    print(f"{os.cpu_count()} cores; {args.seconds:g} s per run; synthetic-writers-* sessions")
    with pg_databases(args.pg_url, "writers_codetape", "writers_es", "writers_copy") as dbs:
        if dbs is None:
            raise SystemExit("no PostgreSQL: nothing to measure")
        urls = {
            "codetape": dbs["writers_codetape"],
            "eventsourcing": dbs["writers_es"],
            "copy": dbs["writers_copy"],
        }
        prepare(urls)
        postmaster = _postmaster(urls["copy"])
        if postmaster is None:
            print("the server is not on this machine: its CPU is not counted")
        header = (
            f"{'batch':>5} {'writers':>7} | {'codetape':>9} {'eventsrc':>9} {'COPY':>9} | "
            f"{'vs COPY':>7} {'vs es':>6} {'vs 1 w':>6} | us/event codetape client+server"
        )
        for busy in (False, True) if args.busy else (False,):
            print("\n" + ("every core busy (a CPU hog per core)" if busy else "no added load"))
            with busy_cores(busy):
                for batch in batches:
                    print(header)
                    sweeps = [
                        {
                            n: {
                                s: run(s, urls[s], n, batch, args.seconds, postmaster)
                                for s in SYSTEMS
                            }
                            for n in procs
                        }
                        for _ in range(args.rounds)
                    ]
                    _print_sweeps(batch, procs, sweeps)
        print("targets: one writer >= 0.5x COPY; four writers >= 60,000 events/s and >= 1.5x one")


if __name__ == "__main__":
    main()

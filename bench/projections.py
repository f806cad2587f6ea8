"""Projections: rebuild all five over >= 1,000,000 events vs a raw json.loads read of the rows.

Usage: python bench/projections.py [--events N] [--pg-url URL | --no-pg] [--no-sqlite]

Builds a SYNTHETIC log (sessions named "synthetic-bench-*") by replaying the
real fixture sessions' events over and over with fresh session, exchange and
container ids and times shifted by a few minutes per copy, so every
projection does the work it does on real traffic (deltas, calls, containers,
files, usage). Then, on the same database:

* raw read: ``SELECT kind, codec, stored_payload, sse_event FROM event_rows`` through the
  driver, and ``json.loads`` of every SSE frame's data / JSON body;
* ``codetape projections rebuild`` (all five projections, from position 0);

and prints both rates (best of 3 raw reads, best of 2 rebuilds) and the
ratio rebuild / raw (target >= 0.4x). Then the
cost report (``codetape cost``, priced with genai-prices) over the >= 10,000
responses exchanges of the same log.

On PostgreSQL the freshly loaded log is vacuumed (``VACUUM (ANALYZE)``)
before anything is measured, as autovacuum would long since have done on a
real log of this size. Without it autovacuum's first pass over the million
new rows (about 20 s of one of this machine's two cores) starts about a
minute after the load and lands in whichever measurement runs then: it made
a rebuild 2.6x slower than the same rebuild after it. The baseline and the
rebuild read the same vacuumed table on the same server, with its settings
untouched (tests/pg_server.py: 128 MB shared_buffers, fsync off).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pg import pg_databases  # noqa: E402

from recorder import projections as P  # noqa: E402
from recorder.events import Event, EventKind  # noqa: E402
from recorder.store import EventStore, migrate  # noqa: E402
from recorder.store.codec import decode  # noqa: E402
from recorder.tape import read_tape  # noqa: E402

_CONTAINER = re.compile(rb"cntr_[0-9a-f]{8}")
_BATCH = 20_000


def fixture_sessions() -> list[list[Event]]:
    return [read_tape(t) for t in sorted((ROOT / "fixtures" / "realdata").rglob("*.jsonl"))]


def synthetic_log(total: int) -> list[Event]:
    """Copies of the fixture sessions with new ids, until ``total`` events."""
    sessions = fixture_sessions()
    events: list[Event] = []
    copy = 0
    while len(events) < total:
        for session in sessions:
            tag = f"{copy:08x}"
            shift = copy * 7 * 60 * 10**9
            sid = f"synthetic-bench-{tag}-{session[0].session_id[:12]}"
            prefix = b"cntr_" + tag.encode()
            for ev in session:
                payload = ev.payload
                if b"cntr_" in payload:
                    payload = _CONTAINER.sub(prefix, payload)
                meta = dict(ev.meta)
                if ev.kind is EventKind.SESSION_OPEN:
                    meta["name"] = f"synthetic-bench-{tag}-{meta.get('name')}"
                elif ev.kind is EventKind.REQUEST and "cntr_" in str(meta.get("url")):
                    meta["url"] = _CONTAINER.sub(prefix, str(meta["url"]).encode()).decode()
                events.append(
                    Event(
                        sid,
                        ev.kind,
                        ev.seq,
                        None if ev.exchange_id is None else f"{tag}-{ev.exchange_id}",
                        ev.recorded_at_ns + shift,
                        ev.offset_ns,
                        payload,
                        meta,
                        ev.sse_event,
                        ev.sse_type,
                        ev.sequence_number,
                        ev.response_id,
                    )
                )
        copy += 1
    return events


def raw_read(store: EventStore) -> tuple[int, float]:
    """Every row through the driver, with json.loads of each payload's JSON."""
    loads = json.loads
    n = 0
    start = time.perf_counter()
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(
            "SELECT kind, codec, stored_payload, sse_event, item_id FROM event_rows "
            "ORDER BY position"
        )
        while True:
            rows = cur.fetchmany(5000)
            if not rows:
                break
            for kind, codec, payload, sse_event, item_id in rows:
                n += 1
                body = decode(codec, payload, sse_event, item_id)
                if kind == "sse":
                    at = body.find(b"data: ")
                    if at >= 0:
                        loads(body[at + 6 :])
                elif kind == "body" and body[:1] == b"{":
                    loads(body)
        cur.close()
    finally:
        raw.close()
    return n, time.perf_counter() - start


def run(label: str, url: str, events: list[Event]) -> None:
    migrate.upgrade(url)
    with EventStore.open(url) as store:
        for k in range(0, len(events), _BATCH):
            store.append(events[k : k + _BATCH])
        if store.backend == "postgresql":
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM (ANALYZE)")
        # Best of several runs of each: the figures are meant to compare code,
        # not the noise of a shared machine.
        n_raw, t_raw = min((raw_read(store) for _ in range(3)), key=lambda r: r[1])
        t_rebuild = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            consumed = P.rebuild(store)
            t_rebuild = min(t_rebuild, time.perf_counter() - start)
        assert consumed == n_raw, (consumed, n_raw)
        raw_rate, rebuild_rate = n_raw / t_raw, consumed / t_rebuild
        print(
            f"{label:<10} rebuild all 5 projections {rebuild_rate:>9,.0f} events/s "
            f"({t_rebuild:.1f} s) | raw read + json.loads {raw_rate:>9,.0f} events/s "
            f"({t_raw:.1f} s) | ratio {rebuild_rate / raw_rate:.2f}x (target >= 0.4x)"
        )
        start = time.perf_counter()
        report = P.costs(store, by="day")
        t_cost = time.perf_counter() - start
        exchanges = len(report.items)
        print(
            f"{label:<10} cost report over {exchanges:,} responses exchanges and "
            f"{len(report.containers):,} containers: {t_cost:.2f} s "
            f"({exchanges / t_cost:,.0f} exchanges/s), total ${report.total:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()

    events = synthetic_log(args.events)
    sessions = sum(1 for e in events if e.kind is EventKind.SESSION_OPEN)
    print(
        f"{len(events):,} synthetic events in {sessions:,} sessions, "
        f"{sum(len(e.payload) for e in events) / 1e6:.0f} MB of payload, from the fixture sessions"
    )
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            run("SQLite", f"sqlite:///{tmp}/codetape.db", events)

    if args.no_pg:
        return
    with pg_databases(args.pg_url, "bench_projections") as urls:
        if urls is not None:
            run("PostgreSQL", urls["bench_projections"], events)


if __name__ == "__main__":
    main()

"""What partitioning the PostgreSQL log (0006_partitions) costs an append.

Usage: python bench/partitions.py [--pg-url URL] [--prefill N] [--events N]
       [--batch N] [--rounds N] [--busy]

Three fresh databases, each prefilled with the same ``--prefill`` SYNTHETIC
events (tests/synthetic_session.py's sessions, not recordings):

* ``plain``: the log at head, then ``events`` made one plain table with the
  same columns, indexes and triggers (:func:`unpartitioned`; the store only
  writes the current row, so an older revision's table cannot stand in);
* ``one``: at head, the default partition size, so the rows sit in one range;
* ``many``: at head, ``--prefill``/20 positions a partition: 20 full ranges
  and 2 empty ones ahead (and the default one): the stream-uniqueness trigger probes
  each partition's index for every appended row.

Then, in interleaved rounds, ``--events`` more are appended to each with
``EventStore.append`` in batches of ``--batch`` (a live recorder's batches
are small). Prints each round's events/s and the median ratio to ``plain``,
and the CPU each append spent per event: this process's (the client) and
the PostgreSQL server's (all its processes, see bench/cpu.py; clock ticks of
10 ms, so a round needs thousands of events to resolve it). Figures are
noisy on a shared machine: say under what load they were taken (``--busy``
puts a CPU hog on every core, see bench/load.py; their CPU is not counted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from cpu import postmaster_pid, server_cpu  # noqa: E402
from load import busy_cores  # noqa: E402
from pg import pg_databases  # noqa: E402
from synthetic_session import synthetic_session  # noqa: E402

from recorder.events import Event, new_id  # noqa: E402
from recorder.store import EventStore, migrate  # noqa: E402
from recorder.store.engine import create_engine  # noqa: E402
from recorder.store.partitions import ensure_partitions  # noqa: E402


def sessions(count: int) -> list[list[Event]]:
    """Whole synthetic sessions adding up to at least ``count`` events."""
    made: list[list[Event]] = []
    total, at = 0, 1_767_225_600 * 10**9
    while total < count:
        events = synthetic_session(new_id(), at, calls=10, deltas=40, text_deltas=40)
        made.append(events)
        total += len(events)
        at += 3_600 * 10**9
    return made


def unpartitioned(url: str) -> None:
    """``events`` at ``url`` made one plain table: same columns, indexes and triggers."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            triggers = conn.exec_driver_sql(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgrelid = 'events'::regclass AND NOT tgisinternal"
            ).all()
            conn.exec_driver_sql("DROP VIEW event_rows")  # the appends do not read it
            conn.exec_driver_sql("ALTER TABLE events RENAME TO events_partitioned")
            conn.exec_driver_sql("CREATE TABLE events (LIKE events_partitioned INCLUDING ALL)")
            conn.exec_driver_sql("DROP TABLE events_partitioned")
            for (trigger,) in triggers:
                conn.exec_driver_sql(trigger)
    finally:
        engine.dispose()


def append_all(store: EventStore, batches: list[list[Event]], batch: int) -> int:
    done = 0
    for events in batches:
        for start in range(0, len(events), batch):
            done += len(store.append(events[start : start + batch]))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url")
    parser.add_argument("--prefill", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", action="store_true")
    args = parser.parse_args()
    names = ("bench_plain", "bench_one", "bench_many")
    with pg_databases(args.pg_url, *names) as urls:
        if urls is None:
            return
        migrate.upgrade(urls["bench_plain"])
        unpartitioned(urls["bench_plain"])
        migrate.upgrade(urls["bench_one"])
        migrate.upgrade(urls["bench_many"])
        engine = create_engine(urls["bench_many"])
        with engine.begin() as conn:
            ensure_partitions(conn, rows=max(args.prefill // 20, 1), ahead=21)
        engine.dispose()
        stores = {name: EventStore(create_engine(url), url) for name, url in urls.items()}
        prefill = sessions(args.prefill)
        for name, store in stores.items():
            append_all(store, prefill, 5_000)
            if name == "bench_many":
                with store.engine.begin() as conn:
                    parts = ensure_partitions(conn)
                print(f"bench_many: {len(parts) - 1} ranges and the default partition")
        rates: dict[str, list[float]] = {name: [] for name in names}
        # CPU seconds per event: this process, the server.
        client_cpu: dict[str, list[float]] = {name: [] for name in names}
        server: dict[str, list[float]] = {name: [] for name in names}
        postmaster = postmaster_pid(urls["bench_plain"])
        with busy_cores(args.busy):
            for round_ in range(args.rounds):
                work = sessions(args.events)
                for name, store in stores.items():
                    server0, client0 = server_cpu(postmaster), time.process_time()
                    t0 = time.perf_counter()
                    count = append_all(store, work, args.batch)
                    rates[name].append(count / (time.perf_counter() - t0))
                    client_cpu[name].append((time.process_time() - client0) / count)
                    server[name].append((server_cpu(postmaster) - server0) / count)
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(
                        f"{n.removeprefix('bench_')} {r[-1]:,.0f} ev/s" for n, r in rates.items()
                    )
                )
        base = statistics.median(rates["bench_plain"])
        for name in names:
            median = statistics.median(rates[name])
            client_us = statistics.median(client_cpu[name]) * 1e6
            server_us = statistics.median(server[name]) * 1e6
            print(
                f"{name.removeprefix('bench_'):>5}: median {median:,.0f} events/s "
                f"({median / base:.2f}x plain), CPU per event {client_us:.0f} us client + "
                f"{server_us:.0f} us server = {client_us + server_us:.0f} us, "
                f"batches of {args.batch}, "
                f"after {args.prefill:,} prefilled{', busy cores' if args.busy else ''}"
            )
        for store in stores.values():
            store.close()


if __name__ == "__main__":
    main()

"""What SQLite's insert trigger (0004_no_replace) costs: the same appends with and without it.

Usage: python bench/trigger_cost.py [--events N] [--rounds N]

Builds the synthetic events of bench/import.py once, then in interleaved
rounds appends them with ``EventStore.append`` (batches of 10,000) into a
fresh database with the trigger and into one where it was dropped after the
upgrade, and inserts the stored rows with a raw ``sqlite3.executemany`` into
each kind of database too, and into one whose insert trigger does nothing
(its WHEN is never true): that isolates what running any row trigger costs
from what its lookups cost. Everything else is the same code and schema.
Prints the best and the median round of each, and the ratios with/without
(1.00x: the trigger costs nothing).
"""

from __future__ import annotations

import argparse
import importlib.util
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from recorder.events import Event  # noqa: E402
from recorder.store import EventStore, migrate  # noqa: E402

# bench/import.py cannot be imported by name ("import" is a keyword).
_spec = importlib.util.spec_from_file_location("bench_import", ROOT / "bench" / "import.py")
assert _spec is not None and _spec.loader is not None
bench_import = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_import)


EMPTY_TRIGGER = (
    "CREATE TRIGGER events_empty BEFORE INSERT ON events WHEN NEW.seq < 0 "
    "BEGIN SELECT RAISE(ABORT, 'never'); END"
)


def time_raw_empty_trigger(path: Path, rows: list[tuple[object, ...]]) -> float:
    """Raw executemany into the schema with a row trigger that never does anything."""
    migrate.upgrade(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER events_no_replace")
    conn.execute(EMPTY_TRIGGER)
    conn.commit()
    conn.close()
    return float(bench_import.time_raw_sqlite(path, rows))


def one_round(events: list[Event], with_trigger: bool, batch: int = 10_000) -> tuple[float, float]:
    """(codetape append seconds, raw executemany seconds) into fresh databases."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/codetape.db"
        migrate.upgrade(url)
        if not with_trigger:
            conn = sqlite3.connect(f"{tmp}/codetape.db")
            conn.execute("DROP TRIGGER events_no_replace")
            conn.commit()
            conn.close()
        with EventStore.open(url) as store:
            start = time.perf_counter()
            for k in range(0, len(events), batch):
                store.append(events[k : k + batch])
            ours = time.perf_counter() - start
            with store.engine.connect() as conn2:
                rows = [
                    tuple(r)
                    for r in conn2.exec_driver_sql(
                        f"SELECT {bench_import.COLUMNS} FROM events ORDER BY position"
                    )
                ]
        raw = bench_import.time_raw_sqlite(Path(tmp) / "raw.db", rows, insert_trigger=with_trigger)
    return ours, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    events = bench_import.synthetic_events(args.events)
    n = len(events)
    print(f"{n:,} synthetic events, {args.rounds} interleaved rounds each")
    ours: dict[bool, list[float]] = {True: [], False: []}
    raw: dict[bool, list[float]] = {True: [], False: []}
    empty: list[float] = []
    rows: list[tuple[object, ...]] = []
    for r in range(args.rounds):
        for with_trigger in (True, False) if r % 2 == 0 else (False, True):
            a, b = one_round(events, with_trigger)
            ours[with_trigger].append(a)
            raw[with_trigger].append(b)
        if not rows:
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{tmp}/rows.db"
                migrate.upgrade(url)
                with EventStore.open(url) as store:
                    store.append(events)
                    with store.engine.connect() as conn:
                        rows = [
                            tuple(x)
                            for x in conn.exec_driver_sql(
                                f"SELECT {bench_import.COLUMNS} FROM events ORDER BY position"
                            )
                        ]
        with tempfile.TemporaryDirectory() as tmp:
            empty.append(time_raw_empty_trigger(Path(tmp) / "empty.db", rows))
    for label, times in (("codetape append", ours), ("raw executemany", raw)):
        on, off = times[True], times[False]
        print(
            f"{label:<16} without trigger {n / min(off):>8,.0f}/s (median "
            f"{n / statistics.median(off):,.0f}) | with {n / min(on):>8,.0f}/s (median "
            f"{n / statistics.median(on):,.0f}) | with/without {min(off) / min(on):.2f}x "
            f"(median {statistics.median(off) / statistics.median(on):.2f}x)"
        )
    off = raw[False]
    print(
        f"{'raw, empty trigger':<16} {n / min(empty):>8,.0f}/s (median "
        f"{n / statistics.median(empty):,.0f}) | with/without {min(off) / min(empty):.2f}x "
        f"(median {statistics.median(off) / statistics.median(empty):.2f}x)"
    )


if __name__ == "__main__":
    main()

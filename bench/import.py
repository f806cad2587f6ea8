"""Bulk import: codetape's append path vs raw driver inserts of the same rows.

Usage: python bench/import.py [--events N] [--batch N] [--pg-url URL | --no-pg]

Builds N synthetic events (named so: session "synthetic-bench-*") whose
payloads are drawn, in order, from the SSE frames of the fixture tapes, then:

* SQLite: ``EventStore.append`` in batches vs ``sqlite3.executemany`` of the
  very rows codetape stored (hashes precomputed), in one transaction, on a
  database with the same schema, pragmas, indexes and triggers; and the same
  raw insert once more without the insert trigger, to show what it costs.
* PostgreSQL: the same against raw ``psycopg`` ``executemany``. Without
  ``--pg-url`` a throwaway server is started with tests/pg_server.py.

Prints both rates and the ratio codetape / raw (target >= 0.5x).

Also (first, and alone with ``--tape-only``) reading a tape: the N events
written as one tape, read back with ``recorder.tape.iter_tape`` (each line
validated by the pydantic model, :mod:`recorder.tape_line`) against the
reader the models replaced (``json.loads`` and checks by hand, kept here as
the baseline); prints both rates and the ratio (target: the models cost at
most 10% more, ratio >= 0.91x).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pg import pg_databases  # noqa: E402

from recorder.events import Event, EventKind, new_id  # noqa: E402
from recorder.store import EventStore, migrate  # noqa: E402
from recorder.tape import iter_tape, read_tape, write_tape  # noqa: E402

COLUMNS = (
    "position, session_key, exchange_key, seq, kind_key, recorded_at_ns, offset_ns, "
    "sse_event_key, sse_type_key, sequence_number, response_key, item_key, meta, codec, "
    "payload, hash_format_key, hash"
)
# The lean row's key tables: copied before the timed raw insert (an append
# adds a key once per session, exchange or name, not once per row).
KEYS = ("sessions", "exchanges", "responses", "items", "names")
KEY_ROWS: dict[str, list[tuple[object, ...]]] = {}


def fixture_frames() -> list[Event]:
    frames = []
    for tape in sorted((ROOT / "fixtures" / "realdata").rglob("*.jsonl")):
        frames += [e for e in read_tape(tape) if e.kind is EventKind.SSE]
    return frames


def synthetic_events(total: int, per_exchange: int = 500) -> list[Event]:
    frames = fixture_frames()
    events: list[Event] = []
    i = 0
    while len(events) < total:
        sid, xid = new_id(), new_id()
        events.append(
            Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": f"synthetic-bench-{len(events)}"})
        )
        events.append(
            Event(
                sid,
                EventKind.REQUEST,
                0,
                xid,
                payload=b"{}",
                meta={"method": "POST", "url": "/v1/responses"},
            )
        )
        events.append(Event(sid, EventKind.RESPONSE_HEAD, 1, xid, meta={"status": 200}))
        for seq in range(2, 2 + per_exchange):
            f = frames[i % len(frames)]
            i += 1
            events.append(
                Event(
                    sid,
                    EventKind.SSE,
                    seq,
                    xid,
                    offset_ns=seq * 1000,
                    payload=f.payload,
                    sse_event=f.sse_event,
                    sse_type=f.sse_type,
                    sequence_number=f.sequence_number,
                    response_id=f.response_id,
                )
            )
        events.append(
            Event(sid, EventKind.EXCHANGE_END, 2 + per_exchange, xid, meta={"outcome": "completed"})
        )
        events.append(Event(sid, EventKind.SESSION_CLOSE, 1))
    return events


def time_codetape(
    url: str, events: list[Event], batch: int
) -> tuple[float, list[tuple[object, ...]]]:
    migrate.upgrade(url)
    with EventStore.open(url) as store:
        start = time.perf_counter()
        for k in range(0, len(events), batch):
            store.append(events[k : k + batch])
        elapsed = time.perf_counter() - start
        with store.engine.connect() as conn:
            rows = [
                tuple(r)
                for r in conn.exec_driver_sql(f"SELECT {COLUMNS} FROM events ORDER BY position")
            ]
            for table in KEYS:
                KEY_ROWS[table] = [
                    tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id")
                ]
    return elapsed, rows


def time_raw_sqlite(
    path: Path, rows: list[tuple[object, ...]], *, insert_trigger: bool = True
) -> float:
    migrate.upgrade(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    if not insert_trigger:
        conn.execute("DROP TRIGGER events_no_replace")
    for table, key_rows in KEY_ROWS.items():
        if key_rows:
            marks = ", ".join("?" * len(key_rows[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", key_rows)
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join('?' * 17)})", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def time_raw_pg(url: str, rows: list[tuple[object, ...]]) -> float:
    migrate.upgrade(url)
    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq) as conn:
        with conn.cursor() as cur:
            for table, key_rows in KEY_ROWS.items():
                if key_rows:
                    marks = ", ".join(["%s"] * len(key_rows[0]))
                    cur.executemany(f"INSERT INTO {table} VALUES ({marks})", key_rows)
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join(['%s'] * 17)})", rows
            )
        conn.commit()
        return time.perf_counter() - start


def legacy_line_to_event(line: str, where: str) -> Event:
    """The tape reader before the pydantic models: ``json.loads``, then checks by hand."""
    import base64
    import json

    from recorder.errors import TapeError

    record = json.loads(line)
    if not isinstance(record, dict):
        raise TapeError(f"{where}: a tape line must be a JSON object")
    kind = record.get("kind")
    if kind not in _KINDS:
        raise TapeError(f"{where}: unknown event kind {kind!r}")
    if kind == "session_open" and record.get("tape") != 1:
        raise TapeError(f"{where}: tape format version is not 1")
    session, seq, at_ns = record.get("session"), record.get("seq"), record.get("at_ns")
    if not isinstance(session, str) or not session:
        raise TapeError(f"{where}: missing session id")
    if not isinstance(seq, int) or seq < 0:
        raise TapeError(f"{where}: missing or negative seq")
    if not isinstance(at_ns, int):
        raise TapeError(f"{where}: missing at_ns")
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise TapeError(f"{where}: meta must be an object")
    if "b64" in record:
        payload = base64.b64decode(record["b64"], validate=True)
    else:
        text = _optional(record, "text", str, where)
        payload = text.encode("utf-8") if text is not None else b""
    return Event(
        session_id=session,
        kind=EventKind(kind),
        seq=seq,
        exchange_id=_optional(record, "exchange", str, where),
        recorded_at_ns=at_ns,
        offset_ns=_optional(record, "offset_ns", int, where),
        payload=payload,
        meta=meta,
        sse_event=_optional(record, "event", str, where),
        sse_type=_optional(record, "type", str, where),
        sequence_number=_optional(record, "sequence_number", int, where),
        response_id=_optional(record, "response_id", str, where),
    )


_KINDS = {k.value for k in EventKind}


def _optional(record: dict[str, object], key: str, kind: type, where: str) -> object:
    value = record.get(key)
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{where}: {key!r} must be {kind.__name__}")
    return value


def legacy_read(path: Path) -> int:
    count = 0
    with open(path, encoding="utf-8", newline="\n") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                legacy_line_to_event(line, f"{path}:{number}")
                count += 1
    return count


def time_tape_read(events: list[Event], rounds: int = 5) -> None:
    """Best of ``rounds`` interleaved reads of one tape, models vs the reader before them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        # Format 1: the line reader from before the models reads only that one.
        write_tape(events, path, version=1)
        size = path.stat().st_size
        import recorder.tape_line  # noqa: F401  (imported once, outside the timings)

        models, legacy = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            n = sum(1 for _ in iter_tape(path))
            models.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert legacy_read(path) == n
            legacy.append(time.perf_counter() - start)
    ours, before = min(models), min(legacy)
    print(
        f"tape read  ({n:,} lines, {size / 1e6:.1f} MB, best of {rounds}): "
        f"models {n / ours:,.0f} lines/s | before {n / before:,.0f} lines/s | "
        f"ratio {before / ours:.2f}x (target >= 0.91x)"
    )


def report(label: str, n: int, ours: float, raw: float) -> None:
    print(
        f"{label:<11} codetape {n / ours:>10,.0f} events/s | raw {n / raw:>10,.0f} events/s"
        f" | ratio {raw / ours:.2f}x of raw (target >= 0.5x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--tape-only", action="store_true", help="only the tape read")
    args = parser.parse_args()

    events = synthetic_events(args.events)
    n = len(events)
    payload_bytes = sum(len(e.payload) for e in events)
    print(
        f"{n:,} synthetic events, {payload_bytes / 1e6:.1f} MB of payload drawn from fixture frames"
    )
    time_tape_read(events)
    if args.tape_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        ours, rows = time_codetape(f"sqlite:///{tmp}/codetape.db", events, args.batch)
        raw = time_raw_sqlite(Path(tmp) / "raw.db", rows)
        report("SQLite", n, ours, raw)
        bare = time_raw_sqlite(Path(tmp) / "bare.db", rows, insert_trigger=False)
        print(
            f"{'':<11} raw without the insert trigger (0004_no_replace): {n / bare:,.0f} events/s;"
            f" raw inserts keep {bare / raw:.2f}x of that speed with it"
        )

    if args.no_pg:
        return
    with pg_databases(args.pg_url, "bench_codetape", "bench_raw") as urls:
        if urls is not None:
            ours, rows = time_codetape(urls["bench_codetape"], events, args.batch)
            raw = time_raw_pg(urls["bench_raw"], rows)
            report("PostgreSQL", n, ours, raw)


if __name__ == "__main__":
    main()

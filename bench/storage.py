"""Database bytes per payload byte: the wide 0004 row, the lean row raw and compressed, vcrpy.

Usage: python bench/storage.py [TAPE ...] [--pg-url URL | --no-pg]

For each recording (default: the Code Interpreter streaming fixture), on a
fresh database upgraded to the layout measured, counts the bytes its import
adds (every page of every table and index: ``dbstat`` on SQLite,
``pg_total_relation_size`` summed over the log's tables on PostgreSQL,
before and after) and divides by the recording's payload bytes:

* ``0004 wide``: the schema before the lean row (migrated to 0004 only; rows
  inserted as that codetape stored them, hashes included);
* ``lean raw``: this codetape with compression off (``store.codec = None``);
* ``lean zstd``: this codetape as shipped (payloads compressed against the
  shipped dictionary where that pays);
* ``vcrpy``: the same exchanges as a vcrpy YAML cassette (file bytes).

The shipped dictionary was trained on frames that include the fixture
recordings, the measured one among them. ``--holdout`` adds ``lean zstd,
unseen``: the same, compressed against a dictionary trained here on every
sample but the measured recording's (its tape, and the raw recording of the
same name), i.e. what a new recording like it would cost. ``--copies N``
imports the recording N times under fresh session and exchange ids (synthetic
copies, for the marginal cost once the tables' first pages are paid: on
PostgreSQL each of the log's relations takes at least 8 KiB per table and
index from its first row).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pg import pg_databases  # noqa: E402

from recorder.events import Event, EventKind, canonical_json  # noqa: E402
from recorder.store import EventStore, migrate  # noqa: E402
from recorder.store.hashing import GENESIS, HASH_FORMAT, event_hash  # noqa: E402
from recorder.tape import read_tape  # noqa: E402

DEFAULT_TAPE = (
    ROOT / "fixtures/realdata/openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"
)
_LOG_TABLES = ("events", "sessions", "exchanges", "responses", "items", "names")
_WIDE = (
    "position, session_id, exchange_id, seq, kind, recorded_at_ns, offset_ns, sse_event, "
    "sse_type, sequence_number, response_id, meta, payload, hash_format, prev_hash, hash"
)


def db_bytes(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return int(conn.exec_driver_sql("SELECT sum(pgsize) FROM dbstat").scalar() or 0)
        total = 0
        for table in _LOG_TABLES:
            size = conn.exec_driver_sql(
                f"SELECT pg_total_relation_size(to_regclass('{table}'))"
            ).scalar()
            total += int(size or 0)
        return total


def insert_wide(engine: sa.Engine, events: list[Event]) -> list[tuple[object, ...]]:
    """Insert the rows as the 0004 store wrote them (its hash rule is this codetape's)."""
    prev, rows, seqs = GENESIS, [], {}
    for position, ev in enumerate(events, 1):
        seq = ev.seq if ev.seq is not None else seqs.get(ev.stream_id, 0)
        seqs[ev.stream_id] = seq + 1
        meta = canonical_json(dict(ev.meta)) if ev.meta else "{}"
        fields = (
            position, ev.session_id, ev.exchange_id, seq, ev.kind.value, ev.recorded_at_ns,
            ev.offset_ns, ev.sse_event, ev.sse_type, ev.sequence_number, ev.response_id,
            meta, ev.payload,
        )  # fmt: skip
        digest = event_hash(prev, *fields)
        rows.append((*fields, HASH_FORMAT, prev, digest))
        prev = digest
    marker = "?" if engine.dialect.name == "sqlite" else "%s"
    sql = f"INSERT INTO events ({_WIDE}) VALUES ({', '.join([marker] * 16)})"
    with engine.begin() as conn:
        conn.exec_driver_sql(sql, rows)
    return rows


def measure(url: str, layout: str, events: list[Event]) -> int:
    if layout == "0004 wide":
        migrate.upgrade(url, "0004_no_replace")
        engine = sa.create_engine(url)
        try:
            before = db_bytes(engine)
            insert_wide(engine, events)
            return db_bytes(engine) - before
        finally:
            engine.dispose()
    migrate.upgrade(url)
    with EventStore.open(url) as store:
        if layout == "lean raw":
            store.codec = None
        before = db_bytes(store.engine)
        store.append(events)
        assert store.verify().ok
        return db_bytes(store.engine) - before


def cassette_bytes(events: list[Event]) -> int:
    """The exchanges as vcrpy writes them (its YAML serializer, its cassette layout)."""
    from vcr.serializers import yamlserializer

    interactions: list[dict[str, Any]] = []
    by_exchange: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.exchange_id is None:
            continue
        entry = by_exchange.setdefault(ev.exchange_id, {"body": b""})
        meta = dict(ev.meta)
        if ev.kind is EventKind.REQUEST:
            entry["request"] = {
                "method": meta.get("method", "POST"),
                "uri": meta.get("url", ""),
                "body": ev.payload.decode("utf-8", "replace"),
                "headers": {k: [v] for k, v in meta.get("headers", [])},
            }
        elif ev.kind is EventKind.RESPONSE_HEAD:
            entry["status"] = meta.get("status", 200)
            entry["headers"] = {k: [v] for k, v in meta.get("headers", [])}
        elif ev.kind in (EventKind.SSE, EventKind.BODY):
            entry["body"] += ev.payload
    for entry in by_exchange.values():
        interactions.append(
            {
                "request": entry.get("request", {}),
                "response": {
                    "status": {"code": entry.get("status", 200), "message": "OK"},
                    "headers": entry.get("headers", {}),
                    "body": {"string": entry["body"].decode("utf-8", "replace")},
                },
            }
        )
    return len(yamlserializer.serialize({"interactions": interactions, "version": 1}).encode())


def copies(events: list[Event], n: int) -> list[Event]:
    """``n`` copies of the recording, each under fresh session and exchange ids (synthetic)."""
    from dataclasses import replace

    from recorder.events import new_id

    out: list[Event] = []
    for _ in range(n):
        ids: dict[str, str] = {}
        for ev in events:
            sid = ids.setdefault(ev.session_id, new_id())
            xid = None if ev.exchange_id is None else ids.setdefault(ev.exchange_id, new_id())
            out.append(replace(ev, session_id=sid, exchange_id=xid))
    return out


def use_holdout_dictionary(tape: Path) -> None:
    """Compress with a dictionary that never saw ``tape``'s recording (this process only)."""
    import zstandard
    from train_dictionary import samples

    from recorder.store import codec

    own = {e.payload for e in read_tape(tape)}
    data = [codec._cut_item(s)[1] for s in samples(exclude=tape.stem) if s not in own]
    trained = zstandard.train_dictionary(64 * 1024, data, level=19)
    codec._codecs[codec.DEFAULT_CODEC] = codec._Codec(codec.DEFAULT_CODEC, trained.as_bytes())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tapes", nargs="*", type=Path, default=[DEFAULT_TAPE])
    parser.add_argument("--pg-url", default=None)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--holdout", action="store_true")
    parser.add_argument("--copies", type=int, default=1)
    args = parser.parse_args()
    layouts: tuple[str, ...] = ("0004 wide", "lean raw", "lean zstd")
    if args.holdout:
        if len(args.tapes) != 1:
            parser.error("--holdout measures one recording")
        use_holdout_dictionary(args.tapes[0])
        layouts = ("lean zstd",)
    for tape in args.tapes:
        events = copies(read_tape(tape), args.copies)
        payload = sum(len(e.payload) for e in events)
        times = f" ({args.copies} synthetic copies)" if args.copies > 1 else ""
        print(f"{tape.name}{times}: {len(events)} events, {payload:,} payload bytes")
        print(f"  vcrpy cassette    {cassette_bytes(events) / payload:5.2f}x")
        with tempfile.TemporaryDirectory() as tmp:
            for i, layout in enumerate(layouts):
                added = measure(f"sqlite:///{tmp}/{i}.db", layout, events)
                label = layout + (", unseen" if args.holdout else "")
                print(f"  SQLite {label:10} {added / payload:5.2f}x  ({added:,} bytes)")
        if args.no_pg:
            continue
        names = [f"storage_{i}" for i in range(len(layouts))]
        with pg_databases(args.pg_url, *names) as urls:
            if urls is None:
                continue
            for name, layout in zip(names, layouts, strict=True):
                added = measure(urls[name], layout, events)
                label = layout + (", unseen" if args.holdout else "")
                print(f"  PostgreSQL {label:10} {added / payload:5.2f}x  ({added:,} bytes)")


if __name__ == "__main__":
    main()

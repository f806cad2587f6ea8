"""Database bytes per payload byte: the wide 0004 row, the lean row raw and compressed, vcrpy.

Usage: python bench/storage.py [TAPE ...] [--pg-url URL | --no-pg] [--relations]

For each recording (default: the Code Interpreter streaming fixture), on a
fresh database upgraded to the layout measured, counts the bytes its import
adds (every page of every table and index: ``dbstat`` on SQLite; on
PostgreSQL every table, partition, index and TOAST table of the schema,
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
index from its first row). ``--relations`` adds, per layout, the bytes the
empty log already held and what each table and index gained.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
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
_WIDE = (
    "position, session_id, exchange_id, seq, kind, recorded_at_ns, offset_ns, sse_event, "
    "sse_type, sequence_number, response_id, meta, payload, hash_format, prev_hash, hash"
)


# Every relation of the public schema with storage: tables (each partition
# of ``events`` among them), their indexes, and each table's TOAST table and
# its index, every fork (the free space map a bulk insert makes included). A
# partitioned table or index has no storage of its own, so
# ``pg_total_relation_size('events')`` of the parent counts none of the log.
_FORKS = "pg_relation_size({0}) + pg_relation_size({0}, 'fsm') + pg_relation_size({0}, 'vm')"
_PG_RELATIONS = f"""
SELECT c.relname, {_FORKS.format("c.oid")} FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')
UNION ALL
SELECT 'TOAST of ' || c.relname,
       {_FORKS.format("c.reltoastrelid")} + pg_indexes_size(c.reltoastrelid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.reltoastrelid <> 0
"""


def relation_bytes(engine: sa.Engine) -> dict[str, int]:
    """Bytes per table and index (SQLite: per ``dbstat`` name), every page counted."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            query = "SELECT name, sum(pgsize) FROM dbstat GROUP BY name"
        else:
            query = _PG_RELATIONS
        return {str(name): int(size or 0) for name, size in conn.exec_driver_sql(query)}


def db_bytes(engine: sa.Engine) -> int:
    return sum(relation_bytes(engine).values())


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


@dataclass
class Measured:
    """What an import added, in all and per relation, and the bytes there before it."""

    added: int
    empty: int
    relations: dict[str, tuple[int, int]]  # name -> (bytes before, bytes after)


def _measured(before: dict[str, int], after: dict[str, int]) -> Measured:
    added = sum(after.values()) - sum(before.values())
    names = sorted(set(before) | set(after))
    relations = {n: (before.get(n, 0), after.get(n, 0)) for n in names}
    return Measured(added, sum(before.values()), relations)


def measure(url: str, layout: str, events: list[Event]) -> Measured:
    if layout == "0004 wide":
        migrate.upgrade(url, "0004_no_replace")
        engine = sa.create_engine(url)
        try:
            before = relation_bytes(engine)
            insert_wide(engine, events)
            return _measured(before, relation_bytes(engine))
        finally:
            engine.dispose()
    migrate.upgrade(url)
    with EventStore.open(url) as store:
        if layout == "lean raw":
            store.codec = None
        before = relation_bytes(store.engine)
        store.append(events)
        assert store.verify().ok
        return _measured(before, relation_bytes(store.engine))


def report(backend: str, label: str, found: Measured, payload: int, relations: bool) -> None:
    ratio = found.added / payload
    print(f"  {backend} {label:10} {ratio:5.2f}x  ({found.added:,} bytes)")
    if not relations:
        return
    print(f"    {found.empty:,} bytes before the import (an empty log)")
    for name, (before, after) in found.relations.items():
        if after != before:
            print(f"    {name:48} {before:>10,} -> {after:>10,}  (+{after - before:,})")


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
    parser.add_argument(
        "--relations", action="store_true", help="also the bytes each table and index gained"
    )
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
                found = measure(f"sqlite:///{tmp}/{i}.db", layout, events)
                label = layout + (", unseen" if args.holdout else "")
                report("SQLite", label, found, payload, args.relations)
        if args.no_pg:
            continue
        names = [f"storage_{i}" for i in range(len(layouts))]
        with pg_databases(args.pg_url, *names) as urls:
            if urls is None:
                continue
            for name, layout in zip(names, layouts, strict=True):
                found = measure(urls[name], layout, events)
                label = layout + (", unseen" if args.holdout else "")
                report("PostgreSQL", label, found, payload, args.relations)


if __name__ == "__main__":
    main()

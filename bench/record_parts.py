"""Benchmark: what each part of recording costs per event, measured apart, in one process.

Run: ``python bench/record_parts.py [--events 5000] [--rounds 7]``.

The stream is bench/record.py's **synthetic** code interpreter stream (one
frame per chunk). Each part runs alone, in a loop, on one thread (CPU time,
best of ``--rounds``), so the figures are floors, without the GIL handoffs
and cache misses of a real run:

* ``the SDK parsing``: the openai SDK consuming the stream, no recorder (the
  yardstick of the 10% target);
* ``cut + build``: :meth:`ExchangeRecorder.feed` cutting frames, reading
  their type and number, building events, into a sink that only counts;
* ``+ submit (thread sink)``: the same into a :class:`~recorder.writer.Writer`
  whose thread is held off (queueing only);
* ``pipe encode``: what the recorder child's sender and reader add per event
  (``event_row`` + ``marshal`` both ways + ``event_from_row``);
* ``hash``: the SHA-256 chain hash of each row, as an append computes it
  (:func:`~recorder.store.hashing.row_digest`, the texts a stream's events
  share made once);
* ``payload``: cutting the item id out and compressing the frame against
  the shipped dictionary (:func:`recorder.store.codec.encoder`, as an append
  does);
* ``append, batches of N``: :meth:`EventStore.append` into SQLite (hash,
  payload, 17-column lean row, indexes, trigger, WAL commit), one
  transaction per N events;
* ``insert + commit of ready lean rows``: the SQLite part of that append
  alone (rows already built), with and without the trigger that refuses
  an INSERT over an existing event (the difference is the trigger's price).
"""

from __future__ import annotations

import argparse
import contextlib
import marshal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import consume, source, synthetic_frames

from recorder.capture import CaptureSession
from recorder.capture.build import sse_frame_event
from recorder.capture.exchange import ExchangeRecorder
from recorder.capture.messages import event_from_row, event_row
from recorder.events import Event, EventKind, new_id
from recorder.store import EventStore, migrate
from recorder.store.codec import DEFAULT_CODEC, encoder
from recorder.store.hashing import GENESIS, HASH_FORMAT, row_digest, text, texts
from recorder.store.store import _LEAN_COLUMNS
from recorder.writer import Writer


class _Counting:
    congested = False

    def __init__(self) -> None:
        self.events: list[Event] = []

    def submit(self, event: Event) -> bool:
        self.events.append(event)
        return True


def best(rounds: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def feed_all(session: CaptureSession, frames: list[bytes], sink: object) -> None:
    x = ExchangeRecorder(session)
    x._sink = sink  # type: ignore[assignment]
    x._submit_event = sink.submit  # type: ignore[attr-defined]
    x.start("POST", "https://api.openai.com/v1/responses", [], b"{}")
    x.response(200, [("content-type", "text/event-stream")], "HTTP/1.1")
    for frame in frames:
        x.feed(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    frames = list(synthetic_frames(args.events))
    n = len(frames)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/parts.db"
        migrate.upgrade(url)
        store = EventStore.open(url)
        session = CaptureSession(store, "parts", writer="thread")
        results: dict[str, float] = {}
        consume(source(200))  # warm up imports and pydantic models
        results["the SDK parsing (the yardstick)"] = best(
            args.rounds, lambda: consume(source(args.events))
        )
        counting = _Counting()
        results["cut + build (client)"] = best(
            args.rounds, lambda: feed_all(session, frames, _Counting())
        )
        feed_all(session, frames, counting)
        events = counting.events

        def submit_all() -> None:
            # Its thread lingers past the loop: this is the client's side alone.
            writer = Writer(store, flush_interval=3600, max_batch=10**9)
            for event in events:
                writer.submit(event)
            writers.append(writer)

        writers: list[Writer] = []

        results["submit to a writer thread's queue (client)"] = best(args.rounds, submit_all)
        for writer in writers:
            with writer._lock:  # the same events five times: none of them to store
                writer._queue.clear()
                writer._pending_bytes = 0
            writer.close()

        def pipe() -> None:
            rows = marshal.loads(marshal.dumps([event_row(e) for e in events]))
            for row in rows:
                event_from_row(row)

        results["pipe encode + decode (child sink only)"] = best(args.rounds, pipe)

        def hash_all() -> None:
            # As an append hashes: the texts events of one stream share are
            # made once per batch (here: once), each event's ints per event.
            prev = GENESIS
            texts_of: dict[tuple[str | None, ...], tuple[str, str, str]] = {}
            for k, e in enumerate(events):
                key = (e.session_id, e.exchange_id, e.sse_event, e.sse_type, e.response_id)
                parts = texts_of.get(key)
                if parts is None:
                    parts = texts_of[key] = (
                        texts(e.session_id, e.exchange_id),
                        texts(e.sse_event, e.sse_type),
                        texts(e.response_id, "{}"),
                    )
                prev = row_digest(
                    prev,
                    k,
                    parts[0],
                    e.seq or 0,
                    text(e.kind._value_),
                    e.recorded_at_ns,
                    e.offset_ns,
                    parts[1],
                    e.sequence_number,
                    parts[2],
                    e.payload,
                ).hex()

        assert HASH_FORMAT
        results["chain hash (store)"] = best(args.rounds, hash_all)

        def encode_all() -> None:
            encode_one = encoder(DEFAULT_CODEC)
            for e in events:
                encode_one(e.payload, e.sse_event)

        results["payload: item id cut + zstd with the dictionary (store)"] = best(
            args.rounds, encode_all
        )
        sid = new_id()
        store.append([Event(sid, EventKind.SESSION_OPEN, 0, meta={"name": "parts"})])
        for size in (25, 250, 2000):

            def append(size: int = size) -> None:
                xid = new_id()
                batch = [
                    sse_frame_event(
                        sid,
                        xid,
                        k,
                        e.payload,
                        e.sse_event,
                        e.sse_type,
                        e.sequence_number,
                        None,
                        e.recorded_at_ns,
                        e.offset_ns,
                    )
                    for k, e in enumerate(events)
                ]
                for start in range(0, len(batch), size):
                    store.append(batch[start : start + size])

            results[f"append, batches of {size} (store: hash, row, indexes, commit)"] = best(
                max(3, args.rounds // 2), append
            )
        # The SQLite part of an append alone: the last exchange's lean rows, as
        # stored, inserted again (new positions, another exchange key) and
        # committed, in batches of 2,000; then into a log without the trigger
        # that refuses replacing inserts, to price that trigger.
        with store.engine.connect() as conn:
            last_xid = conn.exec_driver_sql("SELECT max(exchange_key) FROM events").scalar()
            lean = [
                list(r)
                for r in conn.exec_driver_sql(
                    f"SELECT {', '.join(_LEAN_COLUMNS)} FROM events "
                    f"WHERE exchange_key = {int(last_xid)} ORDER BY seq"
                )
            ]
        bare_url = f"sqlite:///{tmp}/bare.db"
        migrate.upgrade(bare_url)
        with contextlib.closing(sqlite3.connect(bare_url.removeprefix("sqlite:///"))) as raw:
            raw.execute("DROP TRIGGER events_no_replace")
            raw.commit()
        bare = EventStore.open(bare_url)
        for name, target in (("", store), (", without the no-replace trigger", bare)):

            def insert(target: EventStore = target) -> None:
                position = target.last_position()
                exchange_key = 10**9 + position  # no exchange has it: no stream clash
                for start in range(0, len(lean), 2000):
                    values: list[object] = []
                    for row in lean[start : start + 2000]:
                        position += 1
                        values += (position, row[1], exchange_key, *row[3:])
                    with target._write_connection() as conn, conn.begin():
                        target._sqlite._insert(conn, values)

            results[f"insert + commit of ready lean rows, batches of 2000{name} (SQLite)"] = best(
                max(3, args.rounds // 2), insert
            )
        bare.close()
        session.close()
        store.close()
    sdk = results["the SDK parsing (the yardstick)"]
    print(f"{n} synthetic events, CPU per event (best of {args.rounds}), % of the SDK's")
    for name, seconds in results.items():
        print(f"  {name:64} {seconds / n * 1e6:6.2f} us  {seconds / sdk * 100:5.1f}%")


if __name__ == "__main__":
    main()

"""What checking a tape's chain hashes costs ``codetape import``.

Usage: python bench/import_hashes.py [--events N] [--rounds R]

Builds N synthetic events (``bench/import.py``'s: fixture SSE frames in
sessions of one 500-frame exchange), stores them in a scratch SQLite log and
exports them with their chain fields, then imports that tape into fresh
SQLite databases, alternating rounds with the hash check (as shipped) and
without it (the check replaced by a pass-through, as before it existed).
Prints the best and median import rate of each, their ratio, and the check
alone (reading the tape with and without it, no database).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import importlib  # noqa: E402

import recorder.integrity.tapes as tapes  # noqa: E402
from recorder.export import export_sessions  # noqa: E402
from recorder.ingest import append_in_batches, import_file  # noqa: E402
from recorder.store import EventStore, migrate  # noqa: E402
from recorder.tape import TapeProof, TapeRow, iter_tape_rows  # noqa: E402

synthetic_events = importlib.import_module("import").synthetic_events

_CHECKED = tapes.check_tape_chain


def _unchecked(path: Path, rows: Iterable[TapeRow | TapeProof]) -> Iterator[TapeRow]:
    return (row for row in rows if isinstance(row, TapeRow))


def _import(tape: Path, directory: Path, name: str) -> float:
    url = f"sqlite:///{directory / name}.db"
    migrate.upgrade(url)
    with EventStore.open(url) as store:
        start = time.perf_counter()
        import_file(store, tape)
        return time.perf_counter() - start


def _read(tape: Path, checked: bool) -> float:
    start = time.perf_counter()
    rows = iter_tape_rows(tape)
    for _ in (_CHECKED if checked else _unchecked)(tape, rows):
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as raw:
        directory = Path(raw)
        events = synthetic_events(args.events)
        source = f"sqlite:///{directory / 'source'}.db"
        migrate.upgrade(source)
        tape = directory / "tape.jsonl"
        with EventStore.open(source) as store:
            append_in_batches(store, events)
            ids = [s.id for s in store.sessions()]
            export_sessions(store, ids, tape)
        n = len(events)
        print(f"{n} events, tape {tape.stat().st_size / 1e6:.1f} MB, {len(ids)} sessions")
        times: dict[bool, list[float]] = {True: [], False: []}
        reads: dict[bool, list[float]] = {True: [], False: []}
        for round_ in range(args.rounds):
            for checked in (round_ % 2 == 0, round_ % 2 != 0):
                tapes.check_tape_chain = _CHECKED if checked else _unchecked  # type: ignore[assignment]
                times[checked].append(_import(tape, directory, f"r{round_}-{checked}"))
                reads[checked].append(_read(tape, checked))
        tapes.check_tape_chain = _CHECKED
        for label, table in (("import", times), ("read alone", reads)):
            with_, without = table[True], table[False]
            print(
                f"{label}: with the check {n / min(with_):,.0f} events/s best, "
                f"{n / statistics.median(with_):,.0f} median; without "
                f"{n / min(without):,.0f} best, {n / statistics.median(without):,.0f} median; "
                f"ratio {min(without) / min(with_):.2f}x best, "
                f"{statistics.median(without) / statistics.median(with_):.2f}x median"
            )


if __name__ == "__main__":
    main()

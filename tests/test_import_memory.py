"""Importing a large tape streams it: peak memory does not grow with the tape.

The import runs in a fresh child process (so nothing else in the test run
counts), which reports its resident set before the import and its peak
(VmHWM) after. Holding the tape's events in memory costs more than the tape
itself (about 1.4x its size, measured); the bound is a quarter of it plus 8 MB
for the batch in flight and the driver's buffers.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from import_memory import measure, write_synthetic_tape  # noqa: E402

from recorder.store import EventStore  # noqa: E402

MB = 1024 * 1024


def test_a_large_tape_imports_in_memory_that_does_not_grow_with_it(
    db_url: str, tmp_path: Path
) -> None:
    tape = tmp_path / "synthetic-memory.jsonl"
    size = write_synthetic_tape(tape, 12 * MB)
    got = measure(db_url, tape)
    growth = got["peak"] - got["before"]
    assert growth < 4 * MB + size // 4, (
        f"peak grew {growth / MB:.1f} MB for a {size / MB:.0f} MB tape"
    )
    with EventStore.open(db_url) as store:
        assert store.last_position() == got["events"] > 8_000
        assert store.verify().ok

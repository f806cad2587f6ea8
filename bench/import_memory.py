"""Peak memory of importing a large tape, against the tape's size.

Usage: python bench/import_memory.py [--mb 200] [--db URL]

Writes a synthetic tape (named so: session "synthetic-memory-*", one streamed
exchange of about 1 KB SSE frames, built around a real frame from the
fixtures) of about ``--mb`` MB, then imports it in a fresh child process and
prints the child's resident set before the import and its peak (VmHWM), in
MB. Without ``--db`` the import goes to a new SQLite file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recorder.events import Event, EventKind  # noqa: E402
from recorder.tape import event_to_line  # noqa: E402

CHILD = r"""
import json, sys
from pathlib import Path
from recorder.ingest import import_file
from recorder.store import EventStore, migrate
import recorder.tape_line  # the line model (pydantic) is code, not the tape: load it first
import recorder.integrity.tapes  # the hash check import runs (and the crypto it imports): code too

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} in /proc/self/status")

url, tape = sys.argv[1], Path(sys.argv[2])
migrate.upgrade(url)
with EventStore.open(url) as store:
    store.sessions()  # connections and caches warm, as in the import
    before = status("VmRSS")
    result = import_file(store, tape)
    peak = status("VmHWM")
print(json.dumps({"before": before, "peak": peak, "events": result.events}))
"""


def write_synthetic_tape(path: Path, size: int, tag: str = "memory") -> int:
    """A valid tape of about ``size`` bytes: one session, one exchange of SSE frames.

    ``tag`` makes its ids, so tapes of different tags import side by side.
    """
    frame = (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"delta":"' + b"synthetic " * 96 + b'"}\n\n'
    )
    session, exchange = f"synthetic-{tag}-session", f"synthetic-{tag}-exchange"
    written = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:

        def put(ev: Event) -> None:
            nonlocal written
            line = event_to_line(ev) + "\n"
            written += len(line)
            out.write(line)

        put(Event(session, EventKind.SESSION_OPEN, 0, meta={"name": f"synthetic-{tag}"}))
        put(
            Event(
                session,
                EventKind.REQUEST,
                0,
                exchange_id=exchange,
                meta={"method": "POST", "url": "https://api.openai.com/v1/responses"},
                payload=b'{"model":"synthetic","stream":true}',
            )
        )
        put(Event(session, EventKind.RESPONSE_HEAD, 1, exchange_id=exchange, meta={"status": 200}))
        seq = 2
        while written < size:
            put(Event(session, EventKind.SSE, seq, exchange_id=exchange, payload=frame))
            seq += 1
        put(
            Event(
                session,
                EventKind.EXCHANGE_END,
                seq,
                exchange_id=exchange,
                meta={"outcome": "completed"},
            )
        )
        put(Event(session, EventKind.SESSION_CLOSE, 1))
    return written


def measure(url: str, tape: Path) -> dict[str, int]:
    """Import ``tape`` into ``url`` in a child process; its RSS before and peak, in bytes."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(tape)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tape = Path(tmp) / "synthetic-memory.jsonl"
        size = write_synthetic_tape(tape, args.mb * 1024 * 1024)
        url = args.db or f"sqlite:///{Path(tmp) / 'import.db'}"
        got = measure(url, tape)
    mb = 1024 * 1024
    print(
        f"tape {size / mb:.0f} MB, {got['events']} events: RSS before {got['before'] / mb:.0f} MB, "
        f"peak {got['peak'] / mb:.0f} MB (+{(got['peak'] - got['before']) / mb:.0f} MB)"
    )


if __name__ == "__main__":
    main()

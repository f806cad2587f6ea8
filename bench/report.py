"""Benchmark: writing a session's HTML report, and Chromium loading it.

Run: ``python bench/report.py [--rounds 5] [--busy]`` (needs Debian's ``chromium``;
``--busy``: a CPU hog per core throughout).

The session is **synthetic** (tests/synthetic_session.py: 5,000 events, 48
code interpreter calls, outputs and a downloaded file), stored in a fresh
SQLite log. Each round, interleaved:

* writing the report (``recorder.report.write_report``, the hash re-derived
  as the CLI does) against the baseline of reading the same session's
  events from the log (``EventStore.session_events``), the least a report
  must do; wall time and this process's CPU;
* headless Chromium loading the report (navigation until the load event,
  over the DevTools protocol of tests/chromium.py) against loading a page
  of the same size that is one ``<pre>`` of text; CPU counted for this
  process and every Chromium process (clock ticks of 10 ms).

Prints medians and the ratios to the baselines of the same run.
"""

from __future__ import annotations

import argparse
import html
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from chromium import Chromium, chromium_binary  # noqa: E402
from cpu import tree_cpu  # noqa: E402
from load import busy_cores  # noqa: E402
from synthetic_session import SECOND, SYNTHETIC_NAME, synthetic_session  # noqa: E402

from recorder.report import write_report  # noqa: E402
from recorder.store import EventStore  # noqa: E402


def timed(run):  # type: ignore[no-untyped-def]
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _plain_page(events: list[object], size: int) -> str:
    """A page of ``size`` bytes that is one ``<pre>`` of the events' text."""
    head, tail = "<!doctype html><html><body><pre>", "</pre></body></html>"
    text = html.escape("\n".join(repr(e) for e in events))
    room = size - len(head) - len(tail)
    while len(text) < room:
        text += "\n" + text
    # Cut where no entity is cut in half.
    return head + re.sub(r"&[#a-z0-9]*$", "", text[:room]) + tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--busy", action="store_true", help="a CPU hog on every core")
    args = parser.parse_args()
    if chromium_binary() is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with busy_cores(args.busy), tempfile.TemporaryDirectory() as tmp, Chromium() as browser:
        folder = Path(tmp)
        store = EventStore.open(f"sqlite:///{folder}/report.db", upgrade=True)
        store.append(synthetic_session("synthetic-5k", 1780000000 * SECOND))
        [session] = [s for s in store.sessions() if s.name == SYNTHETIC_NAME]
        report = folder / "report.html"
        plain = folder / "plain.html"
        rows: dict[str, list[tuple[float, float]]] = {"write": [], "read": [], "load": []}
        rows["plain"] = []
        size = 0
        for _ in range(args.rounds):
            wall, cpu, written = timed(lambda: write_report(store, [SYNTHETIC_NAME], report))
            rows["write"].append((wall, cpu))
            size = written.bytes
            wall, cpu, events = timed(lambda: list(store.session_events(session.id)))
            rows["read"].append((wall, cpu))
            if not plain.exists():
                plain.write_text(_plain_page(events, size))
            for name, page in (("load", report), ("plain", plain)):
                before = tree_cpu(browser.process.pid)
                wall, cpu, _ = timed(lambda page=page: browser.load(page.resolve().as_uri()))
                rows[name].append((wall, cpu + tree_cpu(browser.process.pid) - before))
        store.close()

    def med(name: str, i: int = 0) -> float:
        return statistics.median(r[i] for r in rows[name])

    def line(label: str, name: str) -> str:
        wall, cpu = med(name) * 1000, med(name, 1) * 1000
        return f"  {label:<20} {wall:8.1f} ms wall {cpu:8.1f} ms CPU"

    load = "every core busy" if args.busy else "no added load"
    print(f"synthetic 5,000-event session, 48 calls; report {size:,} bytes; {args.rounds} rounds")
    print(f"  ({load})")
    print(line("write the report", "write"))
    print(line("read its events", "read"))
    print(f"  {'ratio':<20} {med('write') / med('read'):8.2f}x")
    print(line("Chromium loads it", "load"))
    print(line("a same-size <pre>", "plain"))
    print(f"  {'ratio':<20} {med('load') / med('plain'):8.2f}x")


if __name__ == "__main__":
    main()

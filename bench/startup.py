"""Start-up time of the command line: ``codetape --help`` and ``codetape sessions``.

Usage: python bench/startup.py [--runs N]

Runs each command N times in a fresh process (the installed ``codetape``
script beside this interpreter) and prints the median wall time of each,
with ``python -c pass`` as the baseline: what any Python program pays to
start. ``sessions`` reads a small SQLite database made here (one fixture tape
imported into a temporary file). Targets: ``--help`` under 0.3 s,
``sessions`` under 0.6 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recorder.ingest import import_file  # noqa: E402
from recorder.store import EventStore, migrate  # noqa: E402

TAPE = ROOT / "fixtures/realdata/vercel-ai/openai-code-interpreter-tool.1.jsonl"


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (median)")
    args = parser.parse_args()
    script = Path(sys.executable).parent / "codetape"
    codetape = [str(script)] if script.exists() else [sys.executable, "-m", "recorder.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'small.db'}"
        migrate.upgrade(url)
        with EventStore.open(url) as store:
            import_file(store, str(TAPE))
        cases = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "codetape --help": [*codetape, "--help"],
            "codetape sessions (1 session)": [*codetape, "sessions", "--db", url],
        }
        for argv in cases.values():  # warm the OS file cache once
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"median of {args.runs} runs each; load average before: {load}"
            f" on {os.cpu_count()} cores"
        )
        for name, argv in cases.items():
            print(f"  {name:32} {median_seconds(argv, args.runs):6.3f} s")
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load average after: {load}")


if __name__ == "__main__":
    main()

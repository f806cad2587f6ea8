"""bench/record.py counts the CPU of every process that records, not only the client's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "record.py"


def test_the_recording_benchmark_counts_the_sinks_cpu_the_childs_too() -> None:
    done = subprocess.run(
        [
            *(sys.executable, str(BENCH), "--events", "300", "--rounds", "1"),
            *("--conditions", "free", "--no-extras", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout.splitlines()[-1])
    assert set(runs) == {"sdk", "thread", "process"}
    assert runs["sdk"]["sink_cpu"] == 0
    for sink in ("thread", "process"):
        run = runs[sink]
        assert run["events"] == runs["sdk"]["events"] == 309
        # The writer thread's or the recorder child's work is measured and counted.
        assert run["sink_cpu"] > 0 and run["client_cpu"] > 0

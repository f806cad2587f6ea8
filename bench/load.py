"""Every core busy: one busy-looping process per core, for benchmarks run under load.

CI runners are never idle, so each benchmark also runs with this on. The hogs
are separate processes (not counted in any benchmark's CPU figures) and are
killed when the ``with`` block ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator


@contextlib.contextmanager
def busy_cores(on: bool = True) -> Iterator[None]:
    """A CPU hog on every core while the block runs (nothing when ``on`` is false)."""
    hogs: list[subprocess.Popen[bytes]] = []
    if on:
        hogs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)
        ]
        time.sleep(0.5)  # let them reach the scheduler before anything is measured
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

"""The SSE splitter's memory on hostile streams, measured in a fresh child process.

* A million tiny events fed in 64 KB chunks: the splitter holds at most one
  partial frame, so its peak does not grow with the stream.
* One 50 MB ``data:`` line: the frame must be held whole until its blank line
  comes; the peak is a small multiple of the frame (its bytes, the text they
  decode to, the ``data`` field: about 6x measured, bounded here at 8x), and
  the frame comes out whole and exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024

CHILD = r"""
import json, sys
from pathlib import Path
from recorder.sse import SSESplitter

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

splitter = SSESplitter()
fed = frames = longest = 0
if sys.argv[1] == "tiny":
    piece = b"data: {}\n\n" * 6554  # 65,540 bytes: frames end on chunk boundaries and not
    before = status("VmRSS")
    for _ in range(153):
        out = splitter.feed(piece)
        frames += len(out)
        fed += len(piece)
        longest = max(longest, splitter.pending)
    frames += len(splitter.flush())
    ok = True
else:
    chunk = b"x" * 65536
    before = status("VmRSS")
    splitter.feed(b"data: ")
    for _ in range(800):
        splitter.feed(chunk)
        fed += len(chunk)
    [frame] = splitter.feed(b"\n\n")
    frames = 1
    ok = len(frame.raw) == fed + 8 and len(frame.data) == fed and frame.data[-1] == "x"
    del frame
print(json.dumps({"growth": status("VmHWM") - before, "frames": frames, "fed": fed,
                  "longest_pending": longest, "ok": ok}))
"""


def _run(mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode], check=True, capture_output=True, text=True, cwd=ROOT
    )
    result: dict[str, int] = json.loads(done.stdout)
    return result


def test_a_million_tiny_events_take_no_more_memory_than_a_few() -> None:
    got = _run("tiny")
    assert got["frames"] == 153 * 6554 > 1_000_000
    assert got["longest_pending"] < 16  # never more than one partial frame held
    assert got["growth"] < 8 * MB, got  # the stream is 10 MB; its frames were dropped as fed


def test_a_50_mb_data_line_comes_out_whole_in_a_bounded_multiple_of_it() -> None:
    got = _run("line")
    assert got["ok"] and got["fed"] == 50 * MB
    assert got["growth"] < 8 * got["fed"], got

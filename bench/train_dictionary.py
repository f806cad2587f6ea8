"""Train the zstd dictionary codetape ships for compressing payloads.

Usage: python bench/train_dictionary.py [--size BYTES] [--id N]

Samples: every payload (SSE frame, body, request body) of the fixture tapes
under ``fixtures/``, plus every SSE frame found in the raw recordings under
``/work/shared/realdata`` (``event: ...`` blocks in their text). Writes
``recorder/store/dictionaries/frames-<id>.zdict``. Samples are trained on
as the store compresses them, with their output item id cut out. A dictionary, once shipped,
is never changed: rows name it by id, so a new training gets a new id.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recorder.store import codec  # noqa: E402
from recorder.tape import read_tape  # noqa: E402

REALDATA = Path("/work/shared/realdata")
_FRAME = re.compile(r"(?:^|\n)(event: [^\n]+\ndata: [^\n]+\n\n)")


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def samples(exclude: str | None = None) -> list[bytes]:
    """Every sample; ``exclude``: leave out files whose name (sans extension) ends so."""
    found: list[bytes] = []
    for tape in sorted((ROOT / "fixtures").rglob("*.jsonl")):
        if exclude and tape.stem.endswith(exclude):
            continue
        found += [e.payload for e in read_tape(tape) if e.payload]
    if REALDATA.is_dir():
        for path in sorted(REALDATA.rglob("*")):
            if not path.is_file() or path.suffix not in (".json", ".yaml", ".txt"):
                continue
            if exclude and path.stem.endswith(exclude):
                continue
            text = path.read_text("utf-8", "replace")
            texts = [text]
            if path.suffix == ".json":
                with contextlib.suppress(ValueError):
                    texts += _strings(json.loads(text))
            for t in texts:
                found += [m.encode() for m in _FRAME.findall(t.replace("\r\n", "\n"))]
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--id", type=int, default=1)
    args = parser.parse_args()
    # Trained on what the store compresses: payloads with their item id cut out.
    data = [codec._cut_item(sample)[1] for sample in samples()]
    trained = zstandard.train_dictionary(args.size, data, level=19)
    out = ROOT / "recorder" / "store" / "dictionaries" / f"frames-{args.id}.zdict"
    out.write_bytes(trained.as_bytes())
    print(
        f"{len(data)} samples, {sum(map(len, data))} bytes -> {out} ({len(trained.as_bytes())} B)"
    )


if __name__ == "__main__":
    main()

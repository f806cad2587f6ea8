"""Benchmark: the size of a tape against vcrpy's cassette of the same stream.

For each openai-dotnet code interpreter fixture (real recordings, see
fixtures/realdata/SOURCES.md) it prints the bytes of:

* **tape v1** — the tape in format 1 (every field on every line);
* **tape v2** — the same events in format 2 (what export writes now);
* **v2 .zst** — format 2, zstd-compressed (``export -o NAME.jsonl.zst``);
* **cassette** — vcrpy's YAML cassette of the same exchanges: each one is
  sent through an ``httpx2`` client whose in-memory transport answers with
  the recorded status, headers and body, while vcrpy records it.

and the ratio of each tape to the cassette (target for v2: <= 1.00x). Every
v2 tape is also checked to read back to the same events as v1 (byte-exact
payloads). Sizes do not depend on machine load.

Usage: ``python bench/tapes.py``.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recorder.tape import read_tape, write_tape  # noqa: E402
from replay import load_tape  # noqa: E402

FIXTURES = sorted(
    (ROOT / "fixtures/realdata/openai-dotnet/ResponsesToolTests").glob("CodeInterpreter*.jsonl")
)


def cassette_bytes(tape: Path, cassette: Path) -> int:
    """The size of vcrpy's cassette of every exchange on ``tape``."""
    import vcr

    exchanges = load_tape(tape).exchanges
    served = iter(exchanges)

    def handler(request: httpx2.Request) -> httpx2.Response:
        ex = next(served)
        return httpx2.Response(ex.status or 200, headers=list(ex.response_headers), content=ex.body)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with (
            vcr.use_cassette(str(cassette), record_mode="all"),
            httpx2.Client(transport=httpx2.MockTransport(handler)) as client,
        ):
            for ex in exchanges:
                client.request(
                    ex.method, ex.url, headers=list(ex.request_headers), content=ex.request_body
                )
    return cassette.stat().st_size


def main() -> None:
    rows: list[tuple[str, int, int, int, int]] = []
    streamed = {f.stem for f in FIXTURES if any(x.streamed for x in load_tape(f).exchanges)}
    with tempfile.TemporaryDirectory() as tmp:
        for fixture in FIXTURES:
            events = read_tape(fixture)
            sizes = {
                "v1": Path(tmp) / f"{fixture.stem}.v1.jsonl",
                "v2": Path(tmp) / f"{fixture.stem}.v2.jsonl",
                "zst": Path(tmp) / f"{fixture.stem}.v2.jsonl.zst",
            }
            write_tape(events, sizes["v1"], version=1)
            write_tape(events, sizes["v2"])
            write_tape(events, sizes["zst"])
            assert read_tape(sizes["v2"]) == events == read_tape(sizes["zst"]), fixture
            cassette = cassette_bytes(fixture, Path(tmp) / f"{fixture.stem}.yaml")
            rows.append(
                (
                    fixture.stem,
                    sizes["v1"].stat().st_size,
                    sizes["v2"].stat().st_size,
                    sizes["zst"].stat().st_size,
                    cassette,
                )
            )
    print(
        f"{'fixture (openai-dotnet ResponsesToolTests)':50} {'tape v1':>9} {'tape v2':>9} "
        f"{'v2 .zst':>8} {'cassette':>9} {'v1/cas':>7} {'v2/cas':>7} {'zst/cas':>7}"
    )
    totals = [0, 0, 0, 0]
    for name, v1, v2, zst, cas in rows:
        totals = [t + n for t, n in zip(totals, (v1, v2, zst, cas), strict=True)]
        print(
            f"{name:50} {v1:9,} {v2:9,} {zst:8,} {cas:9,} "
            f"{v1 / cas:6.2f}x {v2 / cas:6.2f}x {zst / cas:6.2f}x"
        )
    v1, v2, zst, cas = totals
    print(
        f"{'total':50} {v1:9,} {v2:9,} {zst:8,} {cas:9,} "
        f"{v1 / cas:6.2f}x {v2 / cas:6.2f}x {zst / cas:6.2f}x"
    )
    streams = [r for r in rows if r[0] in streamed]
    worst = max(r[2] / r[4] for r in streams)
    verdict = "meets" if worst <= 1.0 else "misses"
    print(
        f"streamed fixtures: largest v2 tape / cassette = {worst:.2f}x "
        f"({verdict} the <= 1.00x target)"
    )
    print(
        "non-streamed fixtures: "
        + ", ".join(f"{r[2] / r[4]:.2f}x" for r in rows if r[0] not in streamed)
        + " (a few KB, where the session's provenance meta, which a cassette lacks, weighs)"
    )


if __name__ == "__main__":
    main()

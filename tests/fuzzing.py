"""Shared pieces of the fuzz tests: the hypothesis profile, seed files, byte mutations.

The profile fixes ``max_examples`` so the fuzz tests cost the same in CI on
every run (and derandomizes, so a failure reproduces); ``FUZZ_EXAMPLES`` in
the environment raises it for a longer local hunt.

Seeds are built from the real fixture tapes in ``fixtures/realdata``: the
SSE body of one real streamed exchange, wrapped as each importable format.
The wrapping (cassette, test-proxy entry, chunks lines) is synthetic; the
body inside it is the wire's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from recorder.events import EventKind
from recorder.tape import read_tape

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "realdata"
SEED_TAPE = FIXTURES / "vercel-ai" / "azure-text.1.jsonl"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))

settings.register_profile(
    "fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FUZZ = settings.get_profile("fuzz")


def seed_body() -> bytes:
    """The SSE body of the seed tape's one exchange, byte for byte."""
    return b"".join(ev.payload for ev in read_tape(SEED_TAPE) if ev.kind is EventKind.SSE)


def seed_files() -> dict[str, bytes]:
    """One small, valid file per importable format, keyed by format."""
    body = seed_body()
    request = {"model": "gpt-4.1-mini", "input": "hello", "stream": True}
    vcr = {
        "interactions": [
            {
                "request": {
                    "method": "POST",
                    "uri": "https://api.openai.com/v1/responses",
                    "headers": {"content-type": ["application/json"]},
                    "body": json.dumps(request),
                },
                "response": {
                    "status": {"code": 200, "message": "OK"},
                    "headers": {"content-type": ["text/event-stream"]},
                    "body": {"string": body.decode("utf-8")},
                },
            }
        ],
        "version": 1,
    }
    testproxy = {
        "Entries": [
            {
                "RequestUri": "https://api.openai.com/v1/responses",
                "RequestMethod": "POST",
                "RequestHeaders": {"Content-Type": "application/json"},
                "RequestBody": request,
                "StatusCode": 200,
                "ResponseHeaders": {"Content-Type": "text/event-stream"},
                "ResponseBody": [body.decode("utf-8")],
            }
        ],
        "Variables": {},
    }
    chunks = "".join(
        line.removeprefix("data: ") + "\n"
        for line in body.decode("utf-8").splitlines()
        if line.startswith("data: ")
    )
    return {
        "tape": SEED_TAPE.read_bytes(),
        "vcr": yaml.safe_dump(vcr, width=1 << 20).encode(),
        "testproxy": json.dumps(testproxy).encode(),
        "chunks": chunks.encode(),
    }


def deep(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


# Bytes that break parsers in different ways: invalid UTF-8, a NUL, stray
# line terminators, a BOM in the middle, an unpaired surrogate escaped in JSON.
NASTY = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n\r\n",
    b"\xef\xbb\xbf",
    b'"\\ud800"',
    "\u2028".encode(),
    b"{",
    b"}",
    b":",
    b"- ",
    b"*a",
    b"&a ",
    b"!!binary ",
    deep(3000),
    deep(3000, b'{"a":', b"}"),
]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with up to four mutations: cut, flipped, spliced, duplicated or dropped bytes."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["truncate", "flip", "insert", "nasty", "duplicate", "drop"]))
        if op == "truncate":
            del data[where:]
        elif op == "flip" and where < len(data):
            data[where] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif op == "nasty":
            data[where:where] = draw(st.sampled_from(NASTY))
        elif op == "duplicate":
            size = draw(st.integers(1, 400))
            data[where:where] = data[where : where + size]
        elif op == "drop":
            del data[where : where + draw(st.integers(1, 400))]
    return bytes(data)

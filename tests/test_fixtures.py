"""The fixture tapes are the real recordings, converted faithfully and reproducibly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from recorder.events import EventKind
from recorder.tape import read_tape

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "realdata"
REALDATA = ROOT.parent / "shared" / "realdata"

# Event counts stated in ../shared/realdata/SOURCES.md.
SSE_COUNTS = {
    "pydantic-ai/test_openai_responses_code_execution_return_image_stream.jsonl": [270],
    "pydantic-ai/test_openai_responses_thinking_with_code_execution_tool_stream.jsonl": [365],
    "pydantic-ai/test_openai_responses_code_execution_download_file_stream.jsonl": [110],
    "vercel-ai/openai-code-interpreter-tool.1.jsonl": [393],
    "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl": [491],
}


@pytest.mark.parametrize("name", list(SSE_COUNTS))
def test_sse_event_counts_match_the_sources(name: str) -> None:
    events = read_tape(FIXTURES / name)
    per_exchange: dict[str, int] = {}
    for ev in events:
        if ev.kind is EventKind.SSE and ev.exchange_id:
            per_exchange[ev.exchange_id] = per_exchange.get(ev.exchange_id, 0) + 1
    assert list(per_exchange.values()) == SSE_COUNTS[name]


def test_every_tape_records_its_source_and_fidelity() -> None:
    for tape in FIXTURES.rglob("*.jsonl"):
        opening = json.loads(tape.read_text(encoding="utf-8").split("\n", 1)[0])
        source = opening["meta"]["source"]
        assert source["repo"] in {"pydantic/pydantic-ai", "vercel/ai", "openai/openai-dotnet"}
        assert source["fidelity"] in {"wire", "reserialized"}
        assert source["path"]
    assert "MIT" in (FIXTURES / "SOURCES.md").read_text()


def test_no_secret_survives_in_fixtures() -> None:
    for tape in FIXTURES.rglob("*.jsonl"):
        for ev in read_tape(tape):
            for name, value in ev.meta.get("headers", []):
                if name.lower() in {
                    "authorization",
                    "openai-organization",
                    "openai-project",
                    "cookie",
                    "set-cookie",
                    "api-key",
                }:
                    assert value == "<redacted>", (tape, name)


@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not beside this checkout")
def test_fixtures_regenerate_byte_identical(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("fixtures_build", ROOT / "fixtures" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    written = build.build(REALDATA, tmp_path)
    assert len(written) == 24
    for path in written:
        committed = FIXTURES / path.relative_to(tmp_path)
        assert path.read_bytes() == committed.read_bytes(), committed

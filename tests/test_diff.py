"""``codetape diff``: what a reviewer cares about, not byte noise."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from recorder.cli import main
from recorder.ingest import import_file
from recorder.store import migrate
from recorder.store.store import EventStore
from replay.diff import diff_recordings, summarize
from replay.source import load_tape

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT / "fixtures" / "realdata"
TAPES = sorted(REALDATA.rglob("*.jsonl"))
CI_STREAM = REALDATA / "pydantic-ai/test_openai_responses_code_execution_return_image_stream.jsonl"
DOWNLOAD = REALDATA / "pydantic-ai/test_openai_responses_code_execution_download_file.jsonl"
DOWNLOAD_STREAM = (
    REALDATA / "pydantic-ai/test_openai_responses_code_execution_download_file_stream.jsonl"
)


def _rewrite(src: Path, dst: Path, *subs: tuple[str, str]) -> Path:
    """Copy a tape, applying regex substitutions to every payload text."""
    lines = []
    for line in src.read_text().splitlines():
        record = json.loads(line)
        if "text" in record:
            for pattern, repl in subs:
                record["text"] = re.sub(pattern, repl, record["text"])
        lines.append(json.dumps(record, ensure_ascii=False))
    dst.write_text("\n".join(lines) + "\n")
    return dst


@pytest.mark.parametrize("tape", TAPES, ids=lambda p: p.stem)
def test_a_tape_does_not_differ_from_itself(tape: Path) -> None:
    report = diff_recordings(load_tape(tape), load_tape(tape))
    assert report.same
    assert report.render().endswith("no differences")


def test_noise_only_changes_give_no_differences(tmp_path: Path) -> None:
    noisy = _rewrite(
        CI_STREAM,
        tmp_path / "noisy.jsonl",
        (r'"obfuscation":"[^"]*"', '"obfuscation":"zzzz"'),
        (r"resp_[0-9a-f]+", "resp_other"),
        (r"ci_[0-9a-f]+", "ci_other"),
        (r"cntr_[0-9a-f]+", "cntr_other"),
        (r'"created_at":\d+', '"created_at":1'),
    )
    assert noisy.read_text() != CI_STREAM.read_text()
    assert diff_recordings(load_tape(CI_STREAM), load_tape(noisy)).same


def test_changes_in_code_text_outputs_and_usage_are_shown(tmp_path: Path) -> None:
    changed = _rewrite(
        CI_STREAM,
        tmp_path / "changed.jsonl",
        (r"x\*\*2", "x**3"),
        (r'"output_tokens":(\d+)', r'"output_tokens":9\1'),
    )
    report = diff_recordings(load_tape(CI_STREAM), load_tape(changed))
    assert not report.same
    text = report.render()
    assert "#1 POST /v1/responses:" in text
    fields = {c.field for d in report.exchanges for c in d.changes}
    assert "usage.output_tokens" in fields
    assert any(f.endswith(".code") for f in fields)
    assert re.search(r"^    -.*x\*\*2", text, re.M)
    assert re.search(r"^    \+.*x\*\*3", text, re.M)
    assert "obfuscation" not in text
    assert "1 of 1 exchanges differ" in text


def test_streamed_vs_non_streamed_recording_of_one_scenario() -> None:
    report = diff_recordings(load_tape(DOWNLOAD_STREAM), load_tape(DOWNLOAD))
    first, second = report.exchanges
    fields = [c.field for c in first.changes]
    assert fields[0] == "events"  # the stream had events, the plain call none
    assert "output[1].code" in fields
    # The container file download is the same bytes although the ids in the path differ.
    assert second.changes == []
    assert second.old is not None and second.new is not None


def test_an_added_call_is_shown_as_added_not_as_a_cascade() -> None:
    base = load_tape(DOWNLOAD_STREAM)
    from replay.source import Recording

    shorter = Recording("shorter", base.exchanges[1:])
    report = diff_recordings(base, shorter)
    assert report.exchanges[0].title == "only in OLD: #1 POST /v1/responses"
    assert report.exchanges[1].changes == []


def test_summary_of_code_interpreter_outputs_hashes_images() -> None:
    summary = summarize(load_tape(CI_STREAM).exchanges[0])
    outputs = [v for k, v in summary.fields.items() if k.endswith(".outputs") and v]
    assert outputs
    shown = json.dumps(outputs)
    assert "image/png image" in shown and "sha256" in shown
    assert "base64" not in shown and "iVBOR" not in shown


def test_cli_diff_of_tapes_and_of_sessions(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["diff", str(DOWNLOAD_STREAM), str(DOWNLOAD_STREAM)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("no differences")

    result = runner.invoke(main, ["diff", "--exit-code", str(DOWNLOAD_STREAM), str(DOWNLOAD)])
    assert result.exit_code == 1
    assert "output[1].code:" in result.output

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    with EventStore.open(url) as store:
        old = import_file(store, DOWNLOAD_STREAM).sessions[0][0]
        new = import_file(store, DOWNLOAD).sessions[0][0]
    result = runner.invoke(main, ["diff", "--json", "--db", url, old, new])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["same"] is False
    assert report["exchanges"][1]["changes"] == []

    result = runner.invoke(main, ["diff", "--db", url, "nope.jsonl", old])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no such tape: nope.jsonl"


STREAM = REALDATA / "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"


def test_diff_refuses_an_empty_tape_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    for args in ([str(empty), str(STREAM)], [str(STREAM), str(empty)]):
        result = CliRunner().invoke(main, ["diff", *args])
        assert (result.exit_code, result.stderr) == (1, f"Error: {empty}: the file is empty\n")
        assert result.stdout == ""


def test_diff_refuses_a_cut_tape_and_warns_with_partial(tmp_path: Path) -> None:
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(STREAM.read_text().splitlines(keepends=True)[:100]))
    refused = CliRunner().invoke(main, ["diff", str(cut), str(STREAM)])
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"Error: {cut} is cut short: session ")
    assert refused.stderr.endswith("Replay or compare it anyway with --partial (it then ends "
                                   "where the tape does)\n")  # fmt: skip
    assert refused.stdout == ""
    kept = CliRunner().invoke(main, ["diff", "--partial", str(cut), str(STREAM)])
    assert kept.exit_code == 0, kept.output
    assert kept.stderr.startswith(f"warning: {cut} is cut short: session ")
    assert kept.stderr.count("\n") == 1
    assert "no differences" not in kept.stdout  # the cut stream differs, and is shown

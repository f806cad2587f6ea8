"""The HTML session report's content, on SQLite and PostgreSQL (the browser test is
tests/test_report_browser.py): the demo session, imports without timing, a SYNTHETIC
5,000-event session, atomic writing and the CLI."""

from __future__ import annotations

import base64
import re
import time
from html import unescape
from pathlib import Path

import pytest
from click.testing import CliRunner
from synthetic_session import SYNTHETIC_NAME, synthetic_session

from recorder import projections as P
from recorder.cli import main
from recorder.demo import record
from recorder.errors import CodetapeError, UnknownSession
from recorder.ingest import import_file
from recorder.report import build_report, write_report
from recorder.store import EventStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "realdata"
SECOND = 10**9


def text_of(html: str) -> str:
    """The document's text, tags removed (code blocks read as their source lines)."""
    html = re.sub(r'<span class="linenos">\s*\d+</span>', "", html)
    return unescape(re.sub(r"<[^>]+>", "", html))


def external_references(html: str) -> list[str]:
    """Every src/href/url(...) the page would load that is not inside the document."""
    refs = re.findall(r'\s(?:src|href)="([^"#][^"]*)"', html) + re.findall(r"url\(([^)]*)\)", html)
    # A url_citation is a link the reader may follow, never a load: the demo has none.
    return [r for r in refs if not r.startswith("data:")]


def test_demo_session_report(store: EventStore, tmp_path: Path) -> None:
    done = record(store)
    out = tmp_path / "report.html"
    written = write_report(store, [done.session_id], out)
    html = out.read_text(encoding="utf-8")
    assert written.bytes == len(html.encode()) and written.sessions == 1
    text = text_of(html)

    # Self-contained: no script, no stylesheet or image from elsewhere.
    assert "<script" not in html and "<link" not in html
    assert external_references(html) == []

    # The timeline of the session and of its exchange, to scale.
    assert html.count('<svg class="timeline"') == 2
    (stage,) = P.stages(store, done.session_id)
    assert stage.timed
    assert f"code generation {_ms(stage.code_generation_ns)}" in text

    # Every piece of code, highlighted with line numbers.
    (entry,) = P.audit(store, done.session_id)
    assert html.count('<div class="codeblock"') == 1
    assert entry.code.replace("\r\n", "\n").strip() in text
    assert html.count('<span class="linenos">') == entry.code.count("\n") + 1

    # The image output, from the recorded data URL, as an image.
    assert entry.outputs is not None
    (image,) = [o for o in entry.outputs if o["type"] == "image"]
    assert f'<img class="output" src="{image["url"]}"' in html
    assert base64.b64decode(image["url"].split(",", 1)[1]).startswith(b"\x89PNG")

    # Final text with its citations (container files), costs with their rules.
    assert "Here’s the chart of y = x^2" in text
    assert "[1] file cfile_68dd937c234081919ee5238a16b4fd87.png" in text
    assert "y_eq_x_squared_plot.png" in text
    assert "$0.015125" in text and "genai-prices" in text and "list price gpt-5" in text
    (fee,) = [c for c in P.costs(store).to_json()["containers"]]
    assert fee["fee_rule"] in text

    # Containers and their state; log positions and the head hash verify vouches for.
    assert entry.container_id is not None and entry.container_id in text
    report = store.verify()
    assert f"hash {report.head_hash}" in text
    assert f"re-derived all {report.checked:,} hashes" in text
    assert f"log positions {entry.first_position}–{entry.last_position}" in text


def _ms(ns: int | None) -> str:
    assert ns is not None
    return f"{ns / 1e6:.0f} ms" if ns < 1e9 else f"{ns / 1e9:.1f} s"


def test_imported_recordings_without_timing_degrade_gracefully(store: EventStore) -> None:
    sid = import_file(store, FIXTURES / "vercel-ai" / "openai-code-interpreter-tool.1.jsonl")
    html, count = build_report(store, [sid.sessions[0][0]])
    text = text_of(html)
    assert count == 1
    # The session overview is drawn at the recording's times; no stage timeline is invented.
    assert html.count('<svg class="timeline"') == 1
    assert 'class="codegen"' not in html
    assert "This recording holds no arrival times" in text
    assert "stage times unknown (the recording holds no arrival times)" in text
    entries = P.audit(store, sid.sessions[0][0])
    assert len(entries) == 3
    assert html.count('<div class="codeblock"') == 3
    for entry in entries:
        assert entry.code.strip().splitlines()[-1] in text
    assert "API clock: created 2025-09-11 15:12:47.000 UTC" in text


def test_downloaded_container_file_is_embedded(store: EventStore) -> None:
    name = "test_openai_responses_code_execution_download_file.jsonl"
    result = import_file(store, FIXTURES / "pydantic-ai" / name)
    html, _ = build_report(store, [result.sessions[0][0]])
    (uri,) = set(re.findall(r'download="numbers_and_squares.csv" href="([^"]+)"', html))
    data = base64.b64decode(uri.split(",", 1)[1])
    [container] = P.containers(store)
    [file] = container.files
    assert len(data) == file.bytes == 42
    # Only one element carries the file's anchor, which the citation links to.
    assert html.count(f'id="file-{file.file_id}"') == 1
    assert f'href="#file-{file.file_id}"' in html


def test_synthetic_5000_event_session(store: EventStore, tmp_path: Path) -> None:
    store.append(synthetic_session("synthetic-5k", 1780000000 * SECOND))
    assert store.last_position() == 5000
    started = time.perf_counter()
    written = write_report(store, [SYNTHETIC_NAME], tmp_path / "big.html")
    took = time.perf_counter() - started
    html = (tmp_path / "big.html").read_text(encoding="utf-8")
    print(f"report of 5,000 events: {written.bytes:,} bytes in {took:.2f} s")
    # 48 calls of 95 code lines each: the code is shown once per call (the 4,560 code deltas
    # are not repeated), so the page stays about 26 bytes per source line of the log's payload.
    assert written.bytes < 1_600_000
    assert html.count('<div class="codeblock"') == 48
    assert html.count('class="codegen"') == html.count('class="exec"') == 48
    # Outputs of calls 0, 12, 24 and 36, and the downloaded chart (in its exchange and among
    # the container's files).
    assert html.count('<img class="output"') == 6
    assert html.count('<img class="output" src="data:image/png;base64,') == 6
    # Drawn to scale: each call generates code for 1.2 s, waits 0.2 s and runs 0.5 s.
    first = re.search(
        r'<rect class="codegen" x="[\d.]+" y="[\d.]+" width="([\d.]+)".*?'
        r'<rect class="wait" x="[\d.]+" y="[\d.]+" width="([\d.]+)".*?'
        r'<rect class="exec" x="[\d.]+" y="[\d.]+" width="([\d.]+)"',
        html,
    )
    assert first is not None
    codegen, wait, run = (float(w) for w in first.groups())
    assert codegen / run == pytest.approx(1.2 / 0.5, rel=0.02)
    assert wait / run == pytest.approx(0.2 / 0.5, rel=0.05)


def test_write_is_atomic_and_mistakes_are_one_line(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = record(store)
    where = tmp_path / "out"
    where.mkdir()
    out = where / "report.html"
    out.write_text("the previous report")
    with pytest.raises(UnknownSession):
        write_report(store, [done.session_id, "no-such-session"], out)
    assert out.read_text() == "the previous report"

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    # The rename that would publish the new file fails: the old one stays whole, no debris.
    monkeypatch.setattr("recorder.atomic.os.replace", disk_full)
    with pytest.raises(CodetapeError, match=r"cannot write .*: No space left on device"):
        write_report(store, [done.session_id], out)
    monkeypatch.undo()
    assert out.read_text() == "the previous report"
    assert [p.name for p in where.iterdir()] == ["report.html"]
    write_report(store, [done.session_id], out)
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    with pytest.raises(CodetapeError, match=r"directory .* does not exist"):
        write_report(store, [done.session_id], tmp_path / "missing" / "r.html")
    unverified, _ = build_report(store, [done.session_id], verify=False)
    assert "not verified" in unverified
    assert store.verify().head_hash in unverified


def test_cli_report(db_url: str, tmp_path: Path) -> None:
    with EventStore.open(db_url, upgrade=True) as store:
        session_id = record(store).session_id
    out = tmp_path / "r.html"
    runner = CliRunner()
    result = runner.invoke(main, ["report", session_id, "-o", str(out), "--db", db_url])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out} (") and "1 session(s)" in result.output
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    bad = runner.invoke(main, ["report", "nope", "-o", str(tmp_path / "x.html"), "--db", db_url])
    assert bad.exit_code == 1
    assert bad.output.startswith("Error: no session named or with id 'nope'")
    assert len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


def test_recorded_strings_cannot_script_the_page(store: EventStore) -> None:
    """Text, code and citations from the wire are escaped; only web URLs become links."""
    import json

    from recorder.events import Event, EventKind

    sid, xid, at = "hostile", "hostile-x1", 1780000000 * SECOND
    text = "<script>alert(1)</script> see [here]"
    body = {
        "id": "resp_hostile",
        "object": "response",
        "created_at": at // SECOND,
        "status": "completed",
        "model": "gpt-5",
        "output": [
            {
                "id": "ci_hostile",
                "type": "code_interpreter_call",
                "status": "completed",
                "code": "print('</pre><img src=x onerror=alert(1)>')",
                "container_id": "cntr_hostile",
                "outputs": [{"type": "image", "url": "javascript:alert(1)"}],
            },
            {
                "id": "msg_hostile",
                "type": "message",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": text,
                        "annotations": [
                            {
                                "type": "url_citation",
                                "url": "javascript:alert(1)",
                                "title": "x",
                                "start_index": 31,
                                "end_index": 35,
                            },
                            {
                                "type": "url_citation",
                                "url": "https://example.org/a?b=1&c=2",
                                "title": "<b>ok</b>",
                                "start_index": 31,
                                "end_index": 35,
                            },
                        ],
                    }
                ],
            },
        ],
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    store.append(
        [
            Event(sid, EventKind.SESSION_OPEN, 0, recorded_at_ns=at, meta={"name": sid}),
            Event(
                sid,
                EventKind.REQUEST,
                0,
                xid,
                at,
                payload=b"{}",
                meta={"method": "POST", "url": "https://api.openai.com/v1/responses"},
            ),
            Event(sid, EventKind.RESPONSE_HEAD, 1, xid, at, meta={"status": 200}),
            Event(sid, EventKind.BODY, 2, xid, at, payload=json.dumps(body).encode()),
            Event(sid, EventKind.EXCHANGE_END, 3, xid, at, meta={"outcome": "completed"}),
        ]
    )
    html, _ = build_report(store, [sid])
    assert "<script" not in html and "<img src=x" not in html
    assert 'href="javascript:' not in html and 'src="javascript:' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert (
        '<a href="https://example.org/a?b=1&amp;c=2" rel="noreferrer">&lt;b&gt;ok&lt;/b&gt;</a>'
        in html
    )

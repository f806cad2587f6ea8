"""The HTML report in a real headless Chromium (Debian's ``chromium``, driven over DevTools).

Each report loads with no console error, requests nothing but itself and its
``data:`` images, and renders the timeline, every code block and every image
(decoded, ``naturalWidth > 0``): the demo session (whose screenshot is written,
as for the README), imported recordings without timing, and a SYNTHETIC
5,000-event session. ``.ci/run`` installs chromium and sets
``CODETAPE_REQUIRE_CHROMIUM=1``, so a missing browser fails there instead of
skipping.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import Chromium, Page, chromium_binary
from synthetic_session import SYNTHETIC_NAME, synthetic_session

from recorder import projections as P
from recorder.demo import record
from recorder.ingest import import_file
from recorder.report import write_report
from recorder.store import EventStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "realdata"
SECOND = 10**9
IMPORTS = (
    "vercel-ai/openai-code-interpreter-tool.1.jsonl",
    "pydantic-ai/test_openai_responses_code_execution_download_file.jsonl",
    "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreamingWithFiles.jsonl",
    "vercel-ai/openai-error.1.jsonl",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    if chromium_binary() is None:
        if os.environ.get("CODETAPE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("CODETAPE_REQUIRE_CHROMIUM=1 but chromium is not installed", False)
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with Chromium() as running:
        yield running


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[EventStore]:
    with EventStore.open(sqlite_url, upgrade=True) as store:
        yield store


def open_report(browser: Chromium, path: Path) -> tuple[Page, float]:
    started = time.perf_counter()
    page = browser.load(path.resolve().as_uri())
    took = time.perf_counter() - started
    return page, took


def check_page(page: Page, path: Path, codes: list[str], images: int) -> dict[str, Any]:
    """The assertions every report must pass; returns what the DOM held."""
    assert page.console_errors == []
    assert page.requests, "the page load was not observed"
    own = path.resolve().as_uri()
    assert all(url == own or url.startswith("data:") for url in page.requests), page.requests
    dom = page.evaluate(
        """(async () => {
            const images = [...document.images];
            const widths = await Promise.all(images.map(
                img => img.decode().then(() => img.naturalWidth, () => 0)));
            const svgs = [...document.querySelectorAll('svg.timeline')];
            return {
                timelines: svgs.length,
                timelineWidths: svgs.map(s => s.getBoundingClientRect().width),
                codeBlocks: [...document.querySelectorAll('.codeblock')].map(b => b.innerText),
                imageWidths: widths,
            };
        })()"""
    )
    assert dom["timelines"] >= 1 and all(w > 0 for w in dom["timelineWidths"])
    assert len(dom["codeBlocks"]) == len(codes)
    for shown, code in zip(dom["codeBlocks"], codes, strict=True):
        lines = [line for line in code.replace("\r\n", "\n").splitlines() if line.strip()]
        assert lines[0].strip() in shown and lines[-1].strip() in shown
    assert len(dom["imageWidths"]) == images
    assert all(w > 0 for w in dom["imageWidths"]), dom["imageWidths"]
    return dom


def test_demo_report_in_chromium(
    browser: Chromium, sqlite_store: EventStore, tmp_path: Path
) -> None:
    session_id = record(sqlite_store).session_id
    path = tmp_path / "demo.html"
    write_report(sqlite_store, [session_id], path)
    page, took = open_report(browser, path)
    codes = [e.code for e in P.audit(sqlite_store, session_id)]
    # One image output (the chart); the cited files were not downloaded in this recording.
    check_page(page, path, codes, images=1)
    shot = tmp_path / "report.png"
    page.screenshot(shot)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 1500)
    print(f"demo report loaded in {took:.2f} s")


def test_imported_reports_in_chromium(
    browser: Chromium, sqlite_store: EventStore, tmp_path: Path
) -> None:
    ids = [import_file(sqlite_store, FIXTURES / f).sessions[0][0] for f in IMPORTS]
    path = tmp_path / "imported.html"
    write_report(sqlite_store, ids, path)
    page, _ = open_report(browser, path)
    codes = [e.code for sid in ids for e in P.audit(sqlite_store, sid)]
    assert len(codes) == 6
    check_page(page, path, codes, images=0)
    notes = page.evaluate(
        "[...document.querySelectorAll('.note')].map(n => n.innerText)"
        ".filter(t => t.includes('no arrival times'))"
    )
    assert len(notes) >= 3  # every imported session says its stage times are unknown


def test_synthetic_5000_event_report_in_chromium(
    browser: Chromium, sqlite_store: EventStore, tmp_path: Path
) -> None:
    sqlite_store.append(synthetic_session("synthetic-5k", 1780000000 * SECOND))
    path = tmp_path / "big.html"
    written = write_report(sqlite_store, [SYNTHETIC_NAME], path)
    page, took = open_report(browser, path)
    codes = [e.code for e in P.audit(sqlite_store, "synthetic-5k")]
    dom = check_page(page, path, codes, images=6)  # 4 outputs, the downloaded file twice
    assert len(dom["codeBlocks"]) == 48
    rects = page.evaluate("document.querySelectorAll('svg.timeline rect.exec').length")
    assert rects == 48
    print(f"5,000-event report: {written.bytes:,} bytes, loaded in {took:.2f} s")


def test_the_checks_catch_a_broken_page(browser: Chromium, tmp_path: Path) -> None:
    """The harness itself: a console error, an outside request and an undecodable image fail."""
    path = tmp_path / "broken.html"
    path.write_text(
        "<!doctype html><html><body><div class='codeblock'>x = 1</div>"
        "<svg class='timeline' width='100' height='10'></svg>"
        "<script>console.error('boom')</script>"
        "<img src='data:image/png;base64,AAAA'></body></html>"
    )
    page, _ = open_report(browser, path)
    assert any("boom" in e for e in page.console_errors)
    with pytest.raises(AssertionError):
        check_page(page, path, ["x = 1"], images=1)
    page.console_errors.clear()
    with pytest.raises(AssertionError):  # the image does not decode
        check_page(page, path, ["x = 1"], images=1)
    outside = tmp_path / "outside.html"
    outside.write_text(
        "<!doctype html><html><body><img src='http://127.0.0.1:9/x.png'></body></html>"
    )
    page, _ = open_report(browser, outside)
    assert "http://127.0.0.1:9/x.png" in page.requests
    with pytest.raises(AssertionError):
        check_page(page, outside, [], images=0)

"""Regenerate docs/report.png: the demo session's HTML report in headless Chromium.

Run from a checkout with the test extras installed (`.venv/bin/python docs/screenshot.py`);
it records the demo into a throwaway SQLite database (no key, no network), writes its
report and captures the top 1200x1500 pixels with Debian's `chromium`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from chromium import Chromium  # noqa: E402

from recorder.demo import record, write_report  # noqa: E402
from recorder.store import EventStore  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with EventStore.open(f"sqlite:///{tmp}/demo.db", upgrade=True) as store:
            session_id = record(store).session_id
            written = write_report(store, session_id, Path(tmp) / "report.html")
        with Chromium() as browser:
            page = browser.load(written.path.as_uri())
            if page.console_errors:
                raise SystemExit(f"the report logged errors: {page.console_errors}")
            page.screenshot(ROOT / "docs" / "report.png")
    print(f"wrote {ROOT / 'docs' / 'report.png'}")


if __name__ == "__main__":
    main()

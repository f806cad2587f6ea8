"""The session report: one self-contained HTML file per set of sessions.

Guarantees: :func:`write_report` writes atomically (a temporary file in the
target directory, then a rename), so the path holds the previous file or the
whole new one, never half of it; the document needs nothing but itself to be
viewed (see :mod:`recorder.report.html`). :func:`build_report` returns the
same text without writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recorder.atomic import atomic_bytes, writable_target
from recorder.errors import CodetapeError
from recorder.events import now_ns
from recorder.report.gather import LogSeal, SessionView, gather, seal
from recorder.report.html import render
from recorder.store.store import EventStore

__all__ = ["LogSeal", "SessionView", "WrittenReport", "build_report", "gather", "write_report"]


@dataclass(frozen=True, slots=True)
class WrittenReport:
    path: Path
    bytes: int
    sessions: int


def build_report(
    store: EventStore, refs: Sequence[str], *, verify: bool = True, at_ns: int | None = None
) -> tuple[str, int]:
    """The report of the sessions named by ``refs`` (ids or names) and how many it covers."""
    if not refs:
        raise CodetapeError("name at least one session to report on")
    ids: list[str] = []
    for ref in refs:
        session_id = store.find_session(ref).id
        if session_id not in ids:
            ids.append(session_id)
    written = now_ns()
    views = [gather(store, sid, at_ns=at_ns if at_ns is not None else written) for sid in ids]
    return render(views, seal(store, verify=verify), written_at_ns=written), len(views)


def write_report(
    store: EventStore,
    refs: Sequence[str],
    path: Path,
    *,
    verify: bool = True,
    at_ns: int | None = None,
) -> WrittenReport:
    """Write the report of ``refs`` to ``path`` atomically."""
    path = Path(path)
    writable_target(path, what="a report")  # refused before the report is built
    html, count = build_report(store, refs, verify=verify, at_ns=at_ns)
    data = html.encode("utf-8")
    with atomic_bytes(path, what="a report") as out:
        out.write(data)
    return WrittenReport(path, len(data), count)

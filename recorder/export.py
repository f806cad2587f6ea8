"""Exporting sessions from the log to a tape.

Guarantees: the tape holds every event of each named session in log order and
nothing else; it is written atomically (see :func:`recorder.tape.write_tape`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from recorder.errors import CodetapeError
from recorder.events import StoredEvent
from recorder.store.store import EventStore
from recorder.tape import write_tape

__all__ = ["export_sessions"]


def export_sessions(store: EventStore, refs: Sequence[str], path: Path) -> int:
    """Write the sessions named by ``refs`` (ids or names) to ``path``; return the line count."""
    if not refs:
        raise CodetapeError("name at least one session to export")
    ids: list[str] = []
    for ref in refs:
        session_id = store.find_session(ref).id
        if session_id not in ids:
            ids.append(session_id)

    def events() -> Iterator[StoredEvent]:
        for session_id in ids:
            yield from store.session_events(session_id)

    return write_tape(events(), Path(path))

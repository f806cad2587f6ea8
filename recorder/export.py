"""Exporting sessions from the log to a tape.

Guarantees: the tape holds every event of each named session in log order and
nothing else. Every session is resolved before anything is written, so an
unknown or ambiguous name writes nothing. A file is written atomically (see
:func:`recorder.tape.write_tape`: only a new path or a regular file); a stream
(standard output) gets the lines as they are read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from recorder.errors import CodetapeError
from recorder.events import StoredEvent
from recorder.store.store import EventStore
from recorder.tape import write_tape, write_tape_to

__all__ = ["export_sessions", "resolve_sessions"]


def resolve_sessions(store: EventStore, refs: Sequence[str]) -> list[str]:
    """The ids of the sessions named by ``refs`` (ids or names), each once, in order."""
    if not refs:
        raise CodetapeError("name at least one session to export")
    ids: list[str] = []
    for ref in refs:
        session_id = store.find_session(ref).id
        if session_id not in ids:
            ids.append(session_id)
    return ids


def export_sessions(store: EventStore, refs: Sequence[str], out: Path | str | IO[str]) -> int:
    """Write the sessions named by ``refs`` to ``out`` (a path, or an open text stream).

    Returns the number of lines written.
    """
    ids = resolve_sessions(store, refs)

    def events() -> Iterator[StoredEvent]:
        for session_id in ids:
            yield from store.session_events(session_id)

    if isinstance(out, str | Path):
        return write_tape(events(), Path(out))
    return write_tape_to(events(), out)

"""``codetape demo``: record a bundled real Code Interpreter session, then show every report.

Guarantees: runs with no API key and no network, on the embedded SQLite
database unless ``--db`` says otherwise; running it again reuses the session
it recorded the first time (the import is deterministic, so the ids are the
same) instead of failing. The tape ships inside the package
(``recorder/projections/data``), so the demo works from an installed wheel.

The "record" step is one function, :func:`record`: today it imports the
bundled tape; once capture and replay exist it can replay the tape through
the real ``openai`` SDK with the recorder attached, and nothing else changes.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from recorder.errors import SessionExists
from recorder.events import EventKind
from recorder.ingest import file_events, import_file
from recorder.store.store import EventStore

__all__ = ["DEMO_TAPE", "demo_tape_path", "record"]

DEMO_TAPE = "demo_code_interpreter.jsonl"


def demo_tape_path() -> Path:
    """The bundled tape, from a checkout or an installed wheel."""
    resource = resources.files("recorder.projections").joinpath("data", DEMO_TAPE)
    return Path(str(resource))


def record(store: EventStore) -> tuple[str, bool]:
    """Put the demo session into ``store``; return (session id, newly recorded?)."""
    path = demo_tape_path()
    _, events = file_events(path, "tape")
    session_id = next(e.session_id for e in events if e.kind is EventKind.SESSION_OPEN)
    if store.has_session(session_id):
        return session_id, False
    try:
        import_file(store, path, "tape")
    except SessionExists:
        # Another `codetape demo` recorded it between our check and our append.
        return session_id, False
    return session_id, True

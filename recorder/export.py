"""Exporting sessions from the log to a tape.

Guarantees: the tape holds every event of each named session in log order and
nothing else; it is written atomically (see :func:`recorder.tape.write_tape`).
By default each line carries the row's position and chain hash; given a
checkpoint, the tape ends with the proof that ties its rows to it (see
:mod:`recorder.integrity.tapes`), and nothing is written if the log no longer
matches that checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from recorder.errors import CodetapeError
from recorder.events import StoredEvent
from recorder.store.store import EventStore
from recorder.tape import write_tape

__all__ = ["export_sessions"]


def export_sessions(
    store: EventStore,
    refs: Sequence[str],
    path: Path,
    *,
    hashes: bool = True,
    checkpoint: str | None = None,
) -> int:
    """Write the sessions named by ``refs`` (ids or names) to ``path``; return the line count.

    ``hashes=False`` leaves out positions and hashes (the portable form that
    round-trips byte for byte); ``checkpoint`` is a signed checkpoint note to
    prove the rows against.
    """
    if checkpoint is not None:
        if not hashes:
            raise CodetapeError("a tape proven against a checkpoint must carry its hashes")
        from recorder.integrity.checkpoint import parse_note

        parse_note(checkpoint)  # a malformed note is refused before anything is written
    if not refs:
        raise CodetapeError("name at least one session to export")
    ids: list[str] = []
    for ref in refs:
        session_id = store.find_session(ref).id
        if session_id not in ids:
            ids.append(session_id)

    positions: list[int] = []

    def events() -> Iterator[StoredEvent]:
        for session_id in ids:
            for ev in store.session_events(session_id):
                positions.append(ev.position)
                yield ev

    def proof() -> str | None:
        if checkpoint is None:
            return None
        from recorder.integrity.tapes import proof_line

        return proof_line(store, checkpoint, positions)

    return write_tape(events(), Path(path), hashes=hashes, last_line=proof)

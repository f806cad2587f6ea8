"""Exporting sessions from the log to a tape.

Guarantees: the tape holds every event of each named session in log order and
nothing else. Every session is resolved before anything is written, so an
unknown or ambiguous name writes nothing. A file is written atomically (see
:func:`recorder.tape.write_tape`: only a new path or a regular file); a stream
(standard output) gets the lines as they are read. By default each line
carries the row's position and chain hash; given a checkpoint, the tape ends
with the proof that ties its rows to it (see :mod:`recorder.integrity.tapes`),
and nothing is written if the log no longer matches that checkpoint (so a
checkpoint is only for a file, never a stream).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from recorder.errors import CodetapeError
from recorder.events import StoredEvent
from recorder.store.store import EventStore
from recorder.tape import TAPE_VERSION, write_tape, write_tape_to

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


def export_sessions(
    store: EventStore,
    refs: Sequence[str],
    out: Path | str | IO[str],
    *,
    hashes: bool = True,
    checkpoint: str | None = None,
    version: int = TAPE_VERSION,
) -> int:
    """Write the sessions named by ``refs`` to ``out`` (a path, or an open text stream).

    Returns the number of event lines written. ``hashes=False`` leaves out
    positions and hashes (the portable form that round-trips byte for byte);
    ``checkpoint`` is a signed checkpoint note to prove the rows against;
    ``version`` 1 writes the older tape format. A path whose name ends in
    ``.zst`` gets a zstd-compressed tape.
    """
    to_file = isinstance(out, str | Path)
    if checkpoint is not None:
        if not hashes:
            raise CodetapeError("a tape proven against a checkpoint must carry its hashes")
        if not to_file:
            raise CodetapeError(
                "a tape proven against a checkpoint is written to a file: its proof is "
                "checked before the file appears, which a stream cannot wait for"
            )
        from recorder.integrity.checkpoint import parse_note

        parse_note(checkpoint)  # a malformed note is refused before anything is written
    ids = resolve_sessions(store, refs)

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

    if isinstance(out, str | Path):
        return write_tape(events(), Path(out), hashes=hashes, last_line=proof, version=version)
    return write_tape_to(events(), out, hashes=hashes, version=version)

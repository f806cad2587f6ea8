"""Event rows from a verified archive, so projections can be rebuilt over history that left.

Guarantees:

* **Checked before anything changes.** :func:`check_archive` verifies every
  sealed archive file in the directory against its seal (present, unchanged,
  chained into the next and the last into the live log: see
  :func:`recorder.archive.verify_archive`) and raises :class:`ArchiveError`
  naming each problem, before a rebuild empties a single projection table.
* **The rows the log held.** :func:`archived_rows` yields, in position order
  and in batches, positions ``1..N`` (N: the last position no longer in the
  database) in the shape :func:`~recorder.projections.log_read.read_events`
  gives for live rows, so projections cannot tell the two apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from recorder.archive import ArchiveError, verify_archive
from recorder.events import EventKind
from recorder.projections.log_event import Row
from recorder.store.engine import translate_errors
from recorder.store.seal import archived_until, read_segments
from recorder.store.store import EventStore
from recorder.tape import TapeProof, iter_tape_rows

__all__ = ["archived_rows", "check_archive"]


def check_archive(store: EventStore, directory: Path) -> int:
    """The last archived position (0: nothing left the log), once every file checks out."""
    with translate_errors(store.url), store.engine.connect() as conn:
        gone = archived_until(conn)
    if gone == 0:
        return 0
    problems, _, rows = verify_archive(store, Path(directory))
    if problems:
        listed = "; ".join(map(str, problems))
        raise ArchiveError(f"the archive in {directory} does not check out: {listed}")
    if rows < gone:
        raise ArchiveError(
            f"the archive in {directory} holds positions 1-{rows}, the log lacks 1-{gone}"
        )
    return gone


def archived_rows(
    store: EventStore, directory: Path, until: int, batch: int
) -> Iterator[list[Row]]:
    """Rows of positions ``1..until`` from the archive files, ``batch`` at a time."""
    rows: list[Row] = []
    for segment in read_segments(store):
        if segment.first > until:
            break
        for item in iter_tape_rows(Path(directory) / segment.file):
            if isinstance(item, TapeProof):
                continue
            ev = item.stored()
            if ev.position > until:
                break
            sse = ev.kind is EventKind.SSE
            rows.append(
                (
                    ev.position,
                    ev.session_id,
                    ev.exchange_id,
                    ev.kind.value,
                    ev.recorded_at_ns,
                    ev.offset_ns,
                    ev.sse_type,
                    # As the live read gives them: no meta for SSE frames.
                    None if sse else ev.meta_json,
                    ev.payload,
                )
            )
            if len(rows) == batch:
                yield rows
                rows = []
    if rows:
        yield rows

"""Archive seals: where the live log's chain starts once old rows have left the database.

Guarantees: an ``archived`` event (appended by :mod:`recorder.archive`, in the
stream of the session :data:`ARCHIVE_SESSION`, covered by the chain like every
row) records each archived :class:`Segment`: its first and last position, the
hash of the row before it and of its last row (the head), the archive file's
name and sha256, and the RFC 6962 frontier after its last row. :func:`live_start`
gives the point verification starts from: the genesis when the log still
begins at position 1, else the seal whose segment ends right before the
first row left, so that row's predecessor hash is the seal's head hash and
checkpoints keep their Merkle roots. A log whose first rows are gone with no
seal naming them gets no start: verification then reports those positions
missing, as before. A seal's meta that does not parse is not a seal.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recorder.errors import CodetapeError
from recorder.store.merkle import Frontier

if TYPE_CHECKING:
    from recorder.store.store import EventStore

__all__ = [
    "ARCHIVE_SESSION",
    "ArchivedRows",
    "Segment",
    "Start",
    "archived_until",
    "live_start",
    "read_segments",
    "refuse_replay_from",
]

ARCHIVE_SESSION = "codetape-archive"
"""The session id ``archived`` events belong to (never opened: not a recorded session)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """Rows ``first..last`` of the log, written to ``file``, sealed at position ``sealed_at``."""

    file: str
    first: int
    last: int
    prev_hash: str
    head_hash: str
    sha256: str
    events: int
    sessions: int
    first_at_ns: int
    last_at_ns: int
    frontier: list[str]
    first_hash: str = ""
    """The hash of the log's position 1 (what names the log in checkpoints' origin)."""
    sealed_at: int = 0
    """The position of the ``archived`` event that first sealed it (0: the one being written)."""

    def meta(self) -> dict[str, Any]:
        """The segment as an ``archived`` event's meta records it."""
        return asdict(self)

    @classmethod
    def from_meta(cls, value: Any, sealed_at: int) -> Segment | None:
        """The segment a seal's meta lists; ``sealed_at``: that seal's position."""
        if not isinstance(value, dict):
            return None
        try:
            segment = cls(**value)
        except TypeError:
            return None
        if segment.sealed_at == 0:
            segment = cls(**{**value, "sealed_at": sealed_at})
        return segment


@dataclass(frozen=True, slots=True)
class Start:
    """Where a verification of the live log begins: the row after a seal's segment."""

    position: int
    prev_hash: str
    frontier: Frontier
    segment: Segment | None


def read_segments(store: EventStore) -> list[Segment]:
    """Every sealed segment, oldest first, as the newest seal lists them.

    Each seal lists every segment sealed so far: the newest one is always
    live (it follows every row archived), while older ones may have left
    with the rows they came after.
    """
    newest: list[Segment] = []
    for ev in store.session_events(ARCHIVE_SESSION):
        if ev.kind.value != "archived":
            continue
        try:
            segments = json.loads(ev.meta_json).get("segments", [])
        except (ValueError, AttributeError):
            continue
        found = [
            Segment.from_meta(value, ev.position)
            for value in (segments if isinstance(segments, list) else [])
        ]
        newest = [s for s in found if s is not None]
    return newest


def first_position(store: EventStore) -> int | None:
    """The lowest position still in the log (None when it is empty)."""
    with store.engine.connect() as conn:
        value = conn.execute(sa.text("SELECT min(position) FROM events")).scalar()
    return None if value is None else int(value)


class ArchivedRows(CodetapeError):
    """A replay of the log from a position whose rows have been archived and dropped."""


def archived_until(conn: sa.Connection) -> int:
    """The last position no longer in the database (0 when the log begins at position 1)."""
    value = conn.exec_driver_sql("SELECT min(position) FROM events").scalar()
    return 0 if value is None else max(int(value) - 1, 0)


def refuse_replay_from(conn: sa.Connection, position: int, names: list[str]) -> None:
    """Refuse to fold projections ``names`` from ``position`` past rows that have left.

    Their tables still hold the archived sessions' figures; replaying from
    before the archive seal would start from nothing and silently lose them.
    """
    gone = archived_until(conn)
    if position < gone:
        raise ArchivedRows(
            f"positions 1-{gone} of the log are archived and dropped: rebuilding the "
            f"{', '.join(names)} projection(s) from position {position} would lose the archived "
            "sessions' figures: rebuild with the archive files "
            "(`codetape projections rebuild --archive DIR`)"
        )


def live_start(store: EventStore) -> Start | None:
    """Where verifying the live log starts (None: from the genesis, see the module docstring)."""
    first = first_position(store)
    if first is None or first <= 1:
        return None
    for segment in reversed(read_segments(store)):
        if segment.last == first - 1:
            try:
                frontier = Frontier.restore(segment.last, segment.frontier)
            except ValueError:
                return None
            return Start(first, segment.head_hash, frontier, segment)
    return None

"""Checking the hash chain: what ``codetape verify`` proves from inside the log.

Guarantees: :class:`ChainChecker`, fed every row of a log in position order,
reports a problem at the first position where

* a position is missing (positions run 1, 2, 3, ... with no gap),
* a row's ``hash_format`` is unknown,
* a row's ``prev_hash`` is not its predecessor's hash (a row removed,
  inserted or reordered; since the lean row stores no copy of it, a row
  whose predecessor is missing is hashed on the last row present),
* a row's hash does not re-derive from its fields (a row altered), or
* a stream's ``seq`` skips (an event removed from an exchange or session);

and notes exchanges never ended and capture gaps. That proves the rows are
one unbroken chain from the genesis hash. It cannot prove that this chain is
the one that was recorded: whoever can write the database can rewrite every
row after a change and recompute every hash. Only a hash kept outside the
database (a signed checkpoint, see :mod:`recorder.integrity`) proves that;
the ``marks`` option records the chain head and the RFC 6962 root at given
positions for that comparison.

Once old rows are archived and dropped (see :mod:`recorder.archive`), the
checker is given a ``start``: positions run from there, the first row's
predecessor is the seal's head hash, and the Merkle frontier is the one the
seal recorded, so the live rows are checked exactly as if the archived ones
were still before them (the archive files are checked against the same seal
by ``verify --archive``). ``seals`` maps a position to the head hash a seal
recorded for it: a row still present there must have that hash.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recorder.events import EventKind, StoredEvent
from recorder.store.hashing import GENESIS, HASH_FORMAT, event_hash
from recorder.store.merkle import Frontier, row_leaf
from recorder.store.seal import ARCHIVE_SESSION

if TYPE_CHECKING:
    from recorder.store.seal import Start

__all__ = ["ChainChecker", "VerifyProblem", "VerifyReport", "row_problem"]


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    position: int
    message: str


@dataclass(slots=True)
class VerifyReport:
    """What a verification found. ``ok`` is False on any integrity problem."""

    checked: int = 0
    head_position: int = 0
    head_hash: str = GENESIS
    problems: list[VerifyProblem] = field(default_factory=list)
    open_exchanges: list[str] = field(default_factory=list)
    capture_gaps: int = 0
    heads: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    """For each position asked for as a mark and present: (chain hash, RFC 6962 root)."""
    start_position: int = 1
    """The first position checked: after 1 when older rows are archived behind a seal."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_position(self) -> int | None:
        return min(p.position for p in self.problems) if self.problems else None


def row_problem(ev: StoredEvent, prev: str | None) -> str | None:
    """What is wrong with ``ev`` on its own, given its predecessor's hash (None: unknown)."""
    if ev.hash_format != HASH_FORMAT:
        return f"unknown hash format {ev.hash_format!r} (this codetape knows {HASH_FORMAT})"
    # The lean row keeps no copy of its predecessor's hash: "" when the row
    # before it is missing, and then the link is to the last row present.
    link = ev.prev_hash or prev
    if link is None:
        return "chain broken: the previous row is missing"
    if prev is not None and link != prev:
        return "chain broken: the previous row was removed, inserted or reordered"
    derived = event_hash(
        link,
        ev.position,
        ev.session_id,
        ev.exchange_id,
        ev.seq,
        ev.kind.value,
        ev.recorded_at_ns,
        ev.offset_ns,
        ev.sse_event,
        ev.sse_type,
        ev.sequence_number,
        ev.response_id,
        ev.meta_json,
        ev.payload,
    )
    if derived != ev.hash:
        return "hash mismatch: the row was altered"
    return None


class ChainChecker:
    """Checks a whole log's rows, fed one by one in position order (see the module docstring)."""

    def __init__(
        self,
        *,
        max_problems: int = 20,
        marks: Iterable[int] = (),
        start: Start | None = None,
        seals: Mapping[int, str] | None = None,
    ) -> None:
        self.report = VerifyReport()
        self._max = max_problems
        self._prev = GENESIS
        self._next_position = 1
        self._expected_seq: defaultdict[str, int] = defaultdict(int)
        self._open: dict[str, int] = {}
        self._marks = frozenset(marks)
        self._frontier = Frontier() if self._marks else None
        self._seals = dict(seals or {})
        # The archive session's stream began before the start (its earlier
        # seals may have left with their rows): it goes on from where it is.
        self._continued: set[str] = set()
        if start is not None:
            self._continued.add(ARCHIVE_SESSION)
            self._prev, self._next_position = start.prev_hash, start.position
            self.report.start_position = start.position
            self.report.head_position, self.report.head_hash = start.position - 1, start.prev_hash
            if self._frontier is not None:
                self._frontier = Frontier.restore(start.frontier.size, start.frontier.state())
                if start.position - 1 in self._marks:
                    self.report.heads[start.position - 1] = (start.prev_hash, self._frontier.root())

    def _problem(self, position: int, message: str) -> None:
        if len(self.report.problems) < self._max:
            self.report.problems.append(VerifyProblem(position, message))

    def feed(self, ev: StoredEvent, damage: str | None = None) -> None:
        """Check ``ev``; ``damage``: what its reader found wrong with its stored row."""
        report = self.report
        report.checked += 1
        if ev.position != self._next_position:
            if ev.position > self._next_position:
                first, last = self._next_position, ev.position - 1
                self._problem(
                    first,
                    f"position {first} is missing: a row was removed"
                    if first == last
                    else f"positions {first}-{last} are missing: rows were removed",
                )
            else:
                self._problem(ev.position, "position out of order or repeated")
        self._next_position = ev.position + 1
        problem = damage if damage is not None else row_problem(ev, self._prev)
        stream = ev.exchange_id if ev.exchange_id is not None else ev.session_id
        if stream in self._continued:
            self._continued.discard(stream)
            self._expected_seq.setdefault(stream, ev.seq)
        sealed = self._seals.get(ev.position)
        if problem is None and sealed is not None and sealed != ev.hash:
            problem = "the row differs from the head hash its archive seal recorded"
        if problem is None and ev.seq != self._expected_seq[stream]:
            problem = (
                f"sequence gap in stream {stream}: seq {ev.seq}, "
                f"expected {self._expected_seq[stream]}"
            )
        if problem is not None:
            self._problem(ev.position, problem)
        self._expected_seq[stream] = ev.seq + 1
        kind = ev.kind
        if kind is EventKind.REQUEST and ev.exchange_id is not None:
            self._open[ev.exchange_id] = ev.position
        elif kind is EventKind.EXCHANGE_END and ev.exchange_id is not None:
            self._open.pop(ev.exchange_id, None)
        elif kind is EventKind.CAPTURE_GAP:
            report.capture_gaps += 1
        self._prev = ev.hash
        report.head_position, report.head_hash = ev.position, ev.hash
        if self._frontier is not None:
            self._frontier.append(row_leaf(ev.hash))
            if ev.position in self._marks:
                report.heads[ev.position] = (ev.hash, self._frontier.root())

    def finish(self) -> VerifyReport:
        self.report.open_exchanges = list(self._open)
        return self.report

"""Archiving old partitions of a PostgreSQL log: tape out, seal, verify, then drop.

Guarantees:

* **What leaves.** :func:`plan_archive` picks the longest run of partitions
  from the oldest live one on such that every partition is full (the head is
  past it), every row in it was recorded before the cutoff, and every
  session with a row in it is closed and ends in it: sessions leave whole,
  never one still recording. The archive session's own ``archived`` events
  may leave with them.
* **Archive before seal.** :func:`archive` writes those rows, in position
  order with their positions and chain hashes, to one zstd-compressed format
  2 tape in the directory (atomic: temporary file, fsync, rename, directory
  fsync; see :mod:`recorder.atomic`), reads the file back and re-derives
  every hash from it, and only then appends an ``archived`` event (the seal,
  covered by the chain) recording the segment's first and last position,
  the hash before it and its head hash, the file's name and sha256, and the
  Merkle frontier after it (see :mod:`recorder.store.seal`). Nothing is
  dropped by this step, and it needs no right beyond appending.
* **Drop only what is proven.** :func:`drop_archived` detaches and drops a
  partition only when a seal covers all its rows and the sealed file is in
  the directory with the sealed sha256 and a chain that re-derives from the
  sealed predecessor hash to the sealed head hash, which the rows still in
  the database have too; and only once the projections have caught up past
  it (their tables are not partitioned: archived sessions keep their
  figures). Detach and drop of every partition run in one transaction, under
  the append lock: all go or none. Only the tables' owner may detach or drop
  a partition: a role of ``codetape db roles`` gets a one-line refusal.
* **A crash anywhere** leaves either the partition (with, at most, a file no
  seal names, or a seal whose file is complete: a rerun goes on from there)
  or a verified archive of it. :func:`verify_archive` checks a directory of
  archive files against the seals: each file present, unchanged, chaining
  into the next and the last into the live log; a missing or altered file is
  named.
* SQLite has no partitions: every function here refuses it in one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from recorder.errors import CodetapeError
from recorder.events import Event, EventKind, StoredEvent
from recorder.store.engine import translate_errors
from recorder.store.hashing import GENESIS, HASH_FORMAT
from recorder.store.merkle import Frontier, row_leaf
from recorder.store.partitions import Partition, ensure_partitions, list_partitions
from recorder.store.seal import ARCHIVE_SESSION, Segment, read_segments
from recorder.store.store import APPEND_LOCK, EventStore
from recorder.store.verify import row_problem
from recorder.tape import TapeProof, iter_tape_rows, write_tape

__all__ = [
    "ArchiveError",
    "ArchivePlan",
    "ArchiveProblem",
    "ArchiveResult",
    "DropResult",
    "archive",
    "check_file",
    "drop_archived",
    "parse_before",
    "plan_archive",
    "segment_file_name",
    "verify_archive",
]

# Held for a whole archive or drop run, so two never interleave.
_ARCHIVE_LOCK = int.from_bytes(b"ctarchiv", "big")

Step = Callable[[str], None]
"""Called between the steps (for tests that stop a run there): the step just done."""


class ArchiveError(CodetapeError):
    """Archiving cannot go on (not PostgreSQL, a missing right, a file that does not verify)."""


def parse_before(text: str) -> int:
    """A cutoff date (``YYYY-MM-DD``, midnight UTC) or ISO time, as ns since the epoch."""
    from recorder.times import BadTime, parse_instant

    try:
        return parse_instant(text)
    except BadTime as exc:
        raise ArchiveError(f"--before {exc}") from None


def segment_file_name(first: int, last: int) -> str:
    return f"codetape-log-{first:012d}-{last:012d}.jsonl.zst"


@dataclass(frozen=True, slots=True)
class ArchivePlan:
    partitions: list[Partition]
    first: int
    last: int
    events: int
    sessions: int
    first_at_ns: int
    last_at_ns: int
    stopped: str
    """Why the run stops where it does (the first partition that cannot go, and why)."""


@dataclass(slots=True)
class ArchiveResult:
    plan: ArchivePlan | None
    reason: str
    segment: Segment | None = None
    path: Path | None = None
    seal_position: int | None = None
    dropped: DropResult | None = None


@dataclass(slots=True)
class DropResult:
    dropped: list[Partition] = field(default_factory=list)
    first: int | None = None
    last: int | None = None


@dataclass(frozen=True, slots=True)
class ArchiveProblem:
    file: str
    position: int | None
    message: str

    def __str__(self) -> str:
        at = f" (position {self.position})" if self.position is not None else ""
        return f"{self.file}{at}: {self.message}"


def _require_postgres(store: EventStore, what: str) -> None:
    if store.backend != "postgresql":
        raise ArchiveError(
            f"{what} is PostgreSQL-only: a SQLite log is one table in one file "
            "(keep old months by copying the file, or export sessions to tapes)"
        )


@dataclass(slots=True)
class _Walk:
    """Sessions met so far in the candidate partitions: the last position of each, closed or not."""

    reach: int = 0
    open_session: str | None = None
    sessions: int = 0
    seen: set[int] = field(default_factory=set)


def plan_archive(store: EventStore, before_ns: int) -> ArchivePlan | None:
    """The partitions that can leave (see the module docstring), or None with nothing to go."""
    _require_postgres(store, "archiving")
    return _plan(store, before_ns)[0]


def _plan(store: EventStore, before_ns: int) -> tuple[ArchivePlan | None, str]:
    segments = read_segments(store)
    archived = segments[-1].last if segments else 0
    with translate_errors(store.url), store.engine.connect() as conn:
        head = int(
            conn.exec_driver_sql("SELECT coalesce(max(position), 0) FROM events").scalar_one()
        )
        parts = [p for p in list_partitions(conn) if not p.is_default]
        close_key = conn.exec_driver_sql(
            "SELECT id FROM names WHERE public_id = 'session_close'"
        ).scalar()
        archive_key = conn.exec_driver_sql(
            "SELECT id FROM sessions WHERE public_id = %(s)s", {"s": ARCHIVE_SESSION}
        ).scalar()
        walk = _Walk()
        chosen: list[Partition] = []
        taken: list[Partition] = []
        stats: list[tuple[int, int, int]] = []  # rows, first and last time of each taken
        chosen_stats: list[tuple[int, int, int]] = []
        chosen_sessions = 0
        stopped = "no partition is wholly before the cutoff"
        for part in parts:
            assert part.first is not None and part.end is not None
            if part.end - 1 <= archived:
                continue  # sealed already: the drop step's
            last = part.end - 1
            if last > head:
                stopped = f"{part.name} is still being filled (the head is {head})"
                break
            count, low_at, high_at = conn.exec_driver_sql(
                "SELECT count(*), min(recorded_at_ns), max(recorded_at_ns) FROM events "
                "WHERE position >= %(a)s AND position < %(b)s",
                {"a": part.first, "b": part.end},
            ).one()
            if count == 0:
                continue  # nothing there (a range absorbed ahead of its rows)
            if high_at >= before_ns:
                stopped = f"{part.name} holds rows recorded on or after the cutoff"
                break
            keys = [
                int(k)
                for (k,) in conn.exec_driver_sql(
                    "SELECT DISTINCT session_key FROM events "
                    "WHERE position >= %(a)s AND position < %(b)s",
                    {"a": part.first, "b": part.end},
                )
                if k != archive_key
            ]
            for key in keys:
                if key in walk.seen:
                    continue
                walk.seen.add(key)
                walk.sessions += 1
                reach = conn.exec_driver_sql(
                    "SELECT max(position) FROM events WHERE session_key = %(k)s", {"k": key}
                ).scalar()
                walk.reach = max(walk.reach, int(reach or 0))
                closed = conn.exec_driver_sql(
                    "SELECT 1 FROM events WHERE session_key = %(k)s AND exchange_key IS NULL "
                    "AND kind_key = %(c)s LIMIT 1",
                    {"k": key, "c": close_key},
                ).scalar()
                if not closed and walk.open_session is None:
                    walk.open_session = str(
                        conn.exec_driver_sql(
                            "SELECT public_id FROM sessions WHERE id = %(k)s", {"k": key}
                        ).scalar()
                    )
            if walk.open_session is not None:
                stopped = f"{part.name} holds events of session {walk.open_session}, still open"
                break
            taken.append(part)
            stats.append((int(count), int(low_at), int(high_at)))
            if walk.reach <= last:
                # A cut here leaves no session in two pieces.
                chosen, chosen_stats, chosen_sessions = list(taken), list(stats), walk.sessions
            else:
                stopped = f"a closed session goes on after {part.name}"
        else:
            if parts:
                stopped = "every full partition before the cutoff is taken"
    if not chosen:
        return None, stopped
    first, end = chosen[0].first, chosen[-1].end
    assert first is not None and end is not None
    if first != archived + 1:
        raise ArchiveError(
            f"the oldest partition to archive starts at position {first}, but the last seal "
            f"ends at {archived}: positions {archived + 1}-{first - 1} are in no partition"
        )
    plan = ArchivePlan(
        partitions=chosen,
        first=first,
        last=end - 1,
        events=sum(s[0] for s in chosen_stats),
        sessions=chosen_sessions,
        first_at_ns=min(s[1] for s in chosen_stats),
        last_at_ns=max(s[2] for s in chosen_stats),
        stopped=stopped,
    )
    return plan, stopped


def _segment_rows(store: EventStore, first: int, last: int, prev: str) -> Iterator[StoredEvent]:
    for ev in store.iter_events(first - 1, until=last):
        if ev.position == first and not ev.prev_hash:
            # Its predecessor left with an earlier segment: the seal holds its hash.
            ev = dataclasses.replace(ev, prev_hash=prev)
        yield ev


def check_file(
    path: Path,
    first: int,
    last: int,
    prev_hash: str,
    head_hash: str | None = None,
    sha256: str | None = None,
    frontier: Frontier | None = None,
) -> tuple[list[ArchiveProblem], str, str, Frontier]:
    """Check one archive file: rows ``first..last``, chained from ``prev_hash``.

    Returns the problems, the file's sha256, its head hash, and ``frontier``
    (a Merkle frontier of the rows before ``first``) carried over its rows.
    """
    name = path.name
    problems: list[ArchiveProblem] = []
    frontier = frontier or Frontier()
    if not path.is_file():
        return [ArchiveProblem(name, None, f"missing: {path} is not there")], "", "", frontier
    digest = hashlib.sha256()
    with path.open("rb") as raw:
        for block in iter(lambda: raw.read(1 << 20), b""):
            digest.update(block)
    found_sha = digest.hexdigest()
    if sha256 is not None and found_sha != sha256:
        problems.append(
            ArchiveProblem(
                name, None, f"altered: its sha256 is {found_sha}, the seal says {sha256}"
            )
        )
    expected, prev, head = first, prev_hash, ""
    try:
        for item in iter_tape_rows(path):
            if isinstance(item, TapeProof):
                problems.append(ArchiveProblem(name, None, "an archive file carries no proof line"))
                continue
            position = item.position
            if position != expected or item.hash is None:
                problems.append(
                    ArchiveProblem(name, position, f"position {expected} expected here")
                )
                break
            stored = item.stored()
            problem = row_problem(stored, prev)
            if problem is not None:
                problems.append(ArchiveProblem(name, position, problem))
                break
            frontier.append(row_leaf(stored.hash))
            prev = head = stored.hash
            expected += 1
    except CodetapeError as exc:
        problems.append(ArchiveProblem(name, None, f"does not read: {exc}"))
    if not problems and expected != last + 1:
        problems.append(
            ArchiveProblem(name, expected, f"ends at position {expected - 1}, not {last}")
        )
    if not problems and head_hash is not None and head != head_hash:
        problems.append(ArchiveProblem(name, last, "its head hash is not the one sealed"))
    return problems, found_sha, head, frontier


def _check_segment(
    directory: Path, segment: Segment, frontier: Frontier
) -> tuple[list[ArchiveProblem], Frontier]:
    """:func:`check_file` of a sealed segment's file against all its seal says."""
    problems, _, _, frontier = check_file(
        directory / segment.file,
        segment.first,
        segment.last,
        segment.prev_hash,
        segment.head_hash,
        segment.sha256,
        frontier,
    )
    if not problems and frontier.state() != segment.frontier:
        problems = [ArchiveProblem(segment.file, None, "its Merkle frontier differs")]
    return problems, frontier


def archive(
    store: EventStore,
    before_ns: int,
    directory: Path,
    *,
    step: Step | None = None,
) -> ArchiveResult:
    """Write, verify and seal what :func:`plan_archive` picks (see the module docstring)."""
    _require_postgres(store, "archiving")
    directory = Path(directory)
    if not directory.is_dir():
        raise ArchiveError(f"archive directory {directory} does not exist")
    with _archive_lock(store):
        plan, reason = _plan(store, before_ns)
        if plan is None:
            return ArchiveResult(None, reason)
        segments = read_segments(store)
        previous = segments[-1] if segments else None
        prev_hash = previous.head_hash if previous else GENESIS
        frontier = Frontier.restore(previous.last, previous.frontier) if previous else Frontier()
        path = directory / segment_file_name(plan.first, plan.last)
        write_tape(_segment_rows(store, plan.first, plan.last, prev_hash), path, hashes=True)
        if step:
            step("written")
        problems, sha, head, frontier = check_file(
            path, plan.first, plan.last, prev_hash, frontier=frontier
        )
        if problems:
            raise ArchiveError(f"{path} does not verify after writing: {problems[0].message}")
        if _hash_at(store, plan.last) != head:
            raise ArchiveError(f"{path}: its head hash is not the log's at position {plan.last}")
        if step:
            step("verified")
        segment = Segment(
            file=path.name,
            first=plan.first,
            last=plan.last,
            prev_hash=prev_hash,
            head_hash=head,
            sha256=sha,
            events=plan.events,
            sessions=plan.sessions,
            first_at_ns=plan.first_at_ns,
            last_at_ns=plan.last_at_ns,
            frontier=frontier.state(),
            first_hash=previous.first_hash if previous else _hash_at(store, 1) or "",
        )
        seal = Event(
            ARCHIVE_SESSION,
            EventKind.ARCHIVED,
            meta={
                "before_ns": before_ns,
                "hash_format": HASH_FORMAT,
                "segments": [s.meta() for s in [*segments, segment]],
            },
        )
        (position,) = store.append([seal])
        if step:
            step("sealed")
        return ArchiveResult(
            plan, reason, dataclasses.replace(segment, sealed_at=position), path, position
        )


def _hash_at(store: EventStore, position: int) -> str | None:
    with translate_errors(store.url), store.engine.connect() as conn:
        value = conn.execute(
            sa.text("SELECT hash FROM events WHERE position = :p"), {"p": position}
        ).scalar()
    return None if value is None else bytes(value).hex()


class _archive_lock:
    """A session-level advisory lock held on its own connection for a whole run."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._conn: sa.Connection | None = None

    def __enter__(self) -> None:
        conn = self._store.engine.connect()
        got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({_ARCHIVE_LOCK})").scalar()
        conn.commit()
        if not got:
            conn.close()
            raise ArchiveError("another archive run is under way on this log: try again later")
        self._conn = conn

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_ARCHIVE_LOCK})")
            self._conn.commit()
            self._conn.close()


def _catch_up_projections(store: EventStore, last: int) -> None:
    from recorder.projections import runner

    runner.catch_up(store)
    behind = {name: pos for name, (pos, _) in runner.checkpoints(store).items() if pos < last}
    if behind:
        raise ArchiveError(
            "the projections are behind the rows to drop "
            f"({', '.join(sorted(behind))}): run `codetape projections catch-up` first"
        )


_NOT_OWNER = (
    "dropping partitions needs the owner of the log's tables (the role that ran "
    "`codetape db upgrade`); the roles of `codetape db roles` may not: nothing dropped"
)


def _require_owner(store: EventStore) -> None:
    with translate_errors(store.url), store.engine.connect() as conn:
        owner = conn.exec_driver_sql(
            "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = 'events'::regclass"
        ).scalar()
    if not owner:
        raise ArchiveError(_NOT_OWNER)


def drop_archived(store: EventStore, directory: Path, *, step: Step | None = None) -> DropResult:
    """Detach and drop every partition a verified archive file covers (the tables' owner only)."""
    _require_postgres(store, "dropping archived partitions")
    directory = Path(directory)
    result = DropResult()
    _require_owner(store)
    with _archive_lock(store):
        segments = read_segments(store)
        with translate_errors(store.url), store.engine.connect() as conn:
            parts = [p for p in list_partitions(conn) if not p.is_default]
        todo: list[tuple[Partition, Segment]] = []
        for part in parts:
            assert part.first is not None and part.end is not None
            covering = [s for s in segments if s.first <= part.first and part.end - 1 <= s.last]
            if covering:
                todo.append((part, covering[0]))
        if not todo:
            return result
        checked: set[str] = set()
        previous = {s.file: (segments[i - 1] if i else None) for i, s in enumerate(segments)}
        for _, segment in todo:
            if segment.file in checked:
                continue
            before = previous[segment.file]
            frontier = Frontier.restore(before.last, before.frontier) if before else Frontier()
            problems, frontier = _check_segment(directory, segment, frontier)
            if problems:
                raise ArchiveError(f"archive file {problems[0]}: nothing dropped")
            held = _hash_at(store, segment.last)
            if held is not None and held != segment.head_hash:
                raise ArchiveError(
                    f"the log's row at position {segment.last} is not the one sealed in "
                    f"{segment.file}: nothing dropped (run `codetape verify`)"
                )
            checked.add(segment.file)
        last = max(part.end - 1 for part, _ in todo if part.end is not None)
        _catch_up_projections(store, last)
        if step:
            step("checked")
        try:
            with translate_errors(store.url), store.engine.begin() as conn:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({APPEND_LOCK})")
                for part, _ in todo:
                    conn.exec_driver_sql(f"ALTER TABLE events DETACH PARTITION {part.name}")
                    if step:
                        step("detached")
                    conn.exec_driver_sql(f"DROP TABLE {part.name}")
                ensure_partitions(conn)
        except CodetapeError as exc:
            if "must be owner" in str(exc):
                raise ArchiveError(_NOT_OWNER) from None
            raise
        result.dropped = [part for part, _ in todo]
        result.first = min(p.first for p in result.dropped if p.first is not None)
        result.last = last
    return result


def verify_archive(store: EventStore, directory: Path) -> tuple[list[ArchiveProblem], int, int]:
    """Check every sealed archive file in ``directory``: (problems, files, rows) checked.

    Files chain into each other from the genesis hash, and the last into the
    live log (whose first row, once the archived ones are dropped, the store's
    own verification links to the newest seal).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArchiveError(f"archive directory {directory} does not exist")
    problems: list[ArchiveProblem] = []
    segments = read_segments(store)
    prev_last, prev_head = 0, GENESIS
    frontier = Frontier()
    rows = 0
    for segment in segments:
        if segment.first != prev_last + 1 or segment.prev_hash != prev_head:
            problems.append(
                ArchiveProblem(
                    segment.file,
                    segment.first,
                    f"does not follow the previous segment (which ends at {prev_last})",
                )
            )
        found, frontier = _check_segment(
            directory, segment, Frontier.restore(frontier.size, frontier.state())
        )
        problems += found
        if not found:
            rows += segment.last - segment.first + 1
        else:
            frontier = Frontier.restore(segment.last, segment.frontier)
        prev_last, prev_head = segment.last, segment.head_hash
    with translate_errors(store.url), store.engine.connect() as conn:
        live = conn.exec_driver_sql("SELECT min(position) FROM events").scalar()
    if live is not None and int(live) > prev_last + 1:
        problems.append(
            ArchiveProblem(
                str(directory),
                prev_last + 1,
                f"positions {prev_last + 1}-{int(live) - 1} are in no archive file and not in "
                "the log",
            )
        )
    return problems, len(segments), rows

"""Checkpointing a log, and verifying a log against its checkpoints.

Guarantees:

* :func:`create_checkpoint` and :class:`Checkpointer` sign only a log that
  verifies (chain, positions, hashes), and a :class:`Checkpointer` never
  signs a head that does not extend the newest checkpoint in its directory
  (c2sp.org/tlog-checkpoint: a log must never sign two inconsistent
  checkpoints). Checkpoint files are written atomically.
* :func:`verify_log` re-derives the whole chain once and, for each
  checkpoint, checks that the rows up to its position still give its signed
  chain head and Merkle root. A failure is a problem at the first position
  it cannot vouch for: one past the log's end if rows were cut off the end,
  else one past the position of the newest checkpoint that still matches
  (or 1). A row that fails its own hash or chain is named exactly, as plain
  verification does.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recorder.integrity.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_note,
    read_note,
    sign,
    write_note,
)
from recorder.store.hashing import GENESIS, HASH_FORMAT
from recorder.store.merkle import EMPTY_ROOT, Frontier, row_leaf
from recorder.store.seal import live_start, read_segments
from recorder.store.store import EventStore
from recorder.store.verify import VerifyProblem, VerifyReport, row_problem

__all__ = [
    "CHECKPOINT_SUFFIX",
    "CheckpointCheck",
    "Checkpointer",
    "LogVerification",
    "create_checkpoint",
    "default_origin",
    "load_checkpoints",
    "verify_log",
]

CHECKPOINT_SUFFIX = ".checkpoint"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def default_origin(store: EventStore) -> str:
    """``codetape/log/`` and the start of the first row's hash: unique to a log and its copies."""
    first = next(store.iter_hashes(1), None)
    if first is None:
        # Position 1 may have left with an archive, whose seal keeps its hash.
        segments = read_segments(store)
        if segments and segments[0].first_hash:
            return f"codetape/log/{segments[0].first_hash[:16]}"
        raise CheckpointError("the log is empty: there is nothing to checkpoint yet")
    return f"codetape/log/{first[1][:16]}"


def create_checkpoint(
    store: EventStore, key: Ed25519PrivateKey, *, origin: str | None = None
) -> tuple[Checkpoint, str]:
    """Verify the whole log and sign its head; return the checkpoint and its signed note."""
    head = store.last_position()
    if head == 0:
        raise CheckpointError("the log is empty: there is nothing to checkpoint yet")
    report = store.verify(marks={head}, until=head)
    if not report.ok:
        problem = min(report.problems, key=lambda p: p.position)
        raise CheckpointError(
            f"the log does not verify (position {problem.position}: {problem.message}): "
            "not signing it"
        )
    chain_head, root = report.heads[head]
    checkpoint = Checkpoint(
        origin=origin or default_origin(store),
        size=head,
        root=root,
        head_hash=chain_head,
        hash_format=HASH_FORMAT,
        signed_at=_now(),
    )
    return checkpoint, sign(checkpoint, key)


def load_checkpoints(paths: Iterable[Path], key: Ed25519PublicKey) -> list[tuple[str, Checkpoint]]:
    """Open every checkpoint named (a directory means its ``*.checkpoint`` files), oldest first.

    Each must be signed by ``key``: a checkpoint that is not is an error, not
    a finding about the log.
    """
    found: list[tuple[str, Checkpoint]] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files = sorted(path.glob(f"*{CHECKPOINT_SUFFIX}"))
            if not files:
                raise CheckpointError(f"no *{CHECKPOINT_SUFFIX} files in {path}")
        else:
            files = [path]
        for file in files:
            found.append((str(file), open_note(read_note(file), key, str(file))))
    found.sort(key=lambda item: item[1].size)
    return found


@dataclass(frozen=True, slots=True)
class CheckpointCheck:
    """How the log fared against one checkpoint."""

    source: str
    checkpoint: Checkpoint
    ok: bool
    message: str


@dataclass(slots=True)
class LogVerification:
    """The chain report (checkpoint failures included in its problems) and each checkpoint's."""

    report: VerifyReport
    checkpoints: list[CheckpointCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok


def _when(checkpoint: Checkpoint) -> str:
    return checkpoint.signed_at.strftime("%Y-%m-%d %H:%M:%S UTC")


def verify_log(
    store: EventStore,
    checkpoints: Sequence[tuple[str, Checkpoint]] = (),
    *,
    max_problems: int = 20,
) -> LogVerification:
    """Verify the log, and that it still extends every checkpoint (see the module docstring)."""
    for source, cp in checkpoints:
        if cp.hash_format != HASH_FORMAT:
            raise CheckpointError(
                f"{source}: hash format {cp.hash_format!r} is unknown (this codetape knows "
                f"{HASH_FORMAT})"
            )
    report = store.verify(max_problems=max_problems, marks={cp.size for _, cp in checkpoints})
    result = LogVerification(report)
    first_row_problem = report.first_bad_position
    vouched = 0  # the newest position a matching checkpoint covers
    for source, cp in sorted(checkpoints, key=lambda item: item[1].size):
        got = (GENESIS, EMPTY_ROOT) if cp.size == 0 else report.heads.get(cp.size)
        name = f"checkpoint {source} (position {cp.size}, signed {_when(cp)})"
        if got is None and cp.size < report.start_position - 1:
            # Its rows left with an archive: the live log cannot speak for them.
            message = (
                f"{name}: not checked: positions up to {report.start_position - 1} are archived"
            )
            result.checkpoints.append(CheckpointCheck(source, cp, True, message))
            continue
        if got == (cp.head_hash, cp.root):
            if first_row_problem is not None and first_row_problem <= cp.size:
                # The stored hashes are the signed ones, but a row no longer fits its own.
                message = (
                    f"{name}: not extended unchanged: position {first_row_problem} fails its "
                    "own check (see above)"
                )
                result.checkpoints.append(CheckpointCheck(source, cp, False, message))
                continue
            vouched = max(vouched, cp.size)
            result.checkpoints.append(CheckpointCheck(source, cp, True, f"{name}: extended"))
            continue
        if got is None and report.head_position < cp.size:
            position = report.head_position + 1
            message = (
                f"the log ends at position {report.head_position}, but {name} covers "
                f"{cp.size}: rows {position}-{cp.size} were removed"
            )
        else:
            position = vouched + 1
            message = (
                f"rows {position}-{cp.size} no longer hash to the head signed in {name}: "
                f"a row among them was altered, removed or inserted and the chain recomputed"
            )
            if vouched:
                message += f" (rows up to {vouched} still match an earlier checkpoint)"
        report.problems.append(VerifyProblem(position, message))
        result.checkpoints.append(CheckpointCheck(source, cp, False, message))
    report.problems.sort(key=lambda p: p.position)
    return result


class Checkpointer:
    """Signs checkpoints of a growing log into a directory, reading each row once.

    The first :meth:`advance` reads the whole log (checking it against the
    newest checkpoint already in ``directory``, if any); later ones read only
    the rows appended since. Keep one per directory.
    """

    def __init__(
        self,
        store: EventStore,
        key: Ed25519PrivateKey,
        directory: Path,
        *,
        origin: str | None = None,
    ) -> None:
        self.store = store
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self.directory} does not exist")
        self._key = key
        self._origin = origin
        self._size = 0
        self._head = GENESIS
        self._frontier = Frontier()
        start = live_start(store)
        if start is not None:
            # Archived rows are gone: go on from the seal's head and frontier.
            self._size, self._head = start.position - 1, start.prev_hash
            self._frontier = Frontier.restore(start.frontier.size, start.frontier.state())
        previous = load_checkpoints([self.directory], key.public_key()) if self._has_files() else []
        self.latest: Checkpoint | None = previous[-1][1] if previous else None
        """The newest checkpoint in the directory (signed by this key)."""
        self.latest_source: str | None = previous[-1][0] if previous else None

    def _has_files(self) -> bool:
        return any(self.directory.glob(f"*{CHECKPOINT_SUFFIX}"))

    def _read_to(self, until: int) -> None:
        for ev in self.store.iter_events(self._size, until=until):
            if ev.position != self._size + 1:
                raise CheckpointError(
                    f"position {self._size + 1} is missing from the log: not signing it"
                )
            problem = row_problem(ev, self._head)
            if problem is not None:
                raise CheckpointError(f"position {ev.position}: {problem}: not signing the log")
            self._frontier.append(row_leaf(ev.hash))
            self._size, self._head = ev.position, ev.hash
            latest = self.latest
            if (
                latest is not None
                and ev.position == latest.size
                and (ev.hash, self._frontier.root()) != (latest.head_hash, latest.root)
            ):
                raise CheckpointError(
                    f"the log no longer extends checkpoint {self.latest_source}: "
                    "not signing it (run `codetape verify --checkpoint`)"
                )
        if self._size < until:
            raise CheckpointError(f"position {self._size + 1} is missing from the log")

    def advance(self) -> Checkpoint | None:
        """Sign the log's current head if it grew; return the new checkpoint (None if not)."""
        head = self.store.last_position()
        latest = self.latest
        if latest is not None and head < latest.size:
            raise CheckpointError(
                f"the log ends at position {head}, before checkpoint {self.latest_source} "
                f"(position {latest.size}): rows were removed; not signing it"
            )
        if head > self._size:
            self._read_to(head)
        if head == 0 or (latest is not None and head == latest.size):
            return None
        checkpoint = Checkpoint(
            origin=self._origin or (latest.origin if latest else default_origin(self.store)),
            size=head,
            root=self._frontier.root(),
            head_hash=self._head,
            hash_format=HASH_FORMAT,
            signed_at=_now(),
        )
        target = self.directory / f"{head:012d}{CHECKPOINT_SUFFIX}"
        write_note(sign(checkpoint, self._key), target)
        self.latest, self.latest_source = checkpoint, str(target)
        return checkpoint

    def watch(
        self,
        stop: threading.Event,
        *,
        every_seconds: float | None = None,
        every_events: int | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        """Checkpoint until ``stop`` is set: when ``every_events`` rows were appended since the
        last checkpoint, or ``every_seconds`` passed since it and the log grew."""
        if every_seconds is None and every_events is None:
            raise ValueError("give every_seconds, every_events or both")
        poll = min(poll_seconds, every_seconds) if every_seconds is not None else poll_seconds
        last_time = time.monotonic()
        while True:
            signed_size = self.latest.size if self.latest is not None else 0
            grown = self.store.last_position() - signed_size
            due = every_events is not None and grown >= every_events
            if every_seconds is not None and time.monotonic() - last_time >= every_seconds:
                due = due or grown > 0
            if due or self.latest is None:
                made = self.advance()
                last_time = time.monotonic()
                if made is not None and on_checkpoint is not None:
                    on_checkpoint(made)
            if stop.wait(poll):
                return

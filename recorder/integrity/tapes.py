"""Tapes a third party can check: each row's chain hash, and a proof against a checkpoint.

Guarantees of :func:`verify_tape`:

* **Alone**, a tape with chain fields is checked for internal consistency:
  every row's hash re-derives from its fields and its ``prev_hash``; rows at
  consecutive positions link; no position repeats; each stream's ``seq``
  runs from 0 without a gap (a tape holds whole sessions); and it is not cut
  short (:class:`~recorder.tape.OpenParts`, the rule import applies: a tape
  cut at a line boundary keeps every remaining hash intact). That catches an
  edited, truncated or spliced tape, but not a forger: anyone can compute
  the same hashes over rows of their own. :class:`TapeChain` holds these
  rules; import applies them too (:func:`check_tape_chain`), refusing the
  file at the first row that breaks one. An empty tape, or one with no
  chain fields, is a :class:`~recorder.errors.TapeError`.
* **Against a checkpoint** signed by the given key, the tape's rows at
  positions up to the checkpoint's, with the proof the tape carries, must
  give the signed RFC 6962 root. That proves each of those rows is exactly
  the row the log held at that position when the checkpoint was signed
  (each row's hash commits to every field and its payload). A tape holding
  every row from 1 needs no proof. Rows after the checkpoint's position are
  counted as not covered by it. Given a key, the checkpoint the tape
  carries is checked as well as any given (unless one of them has its
  head), and a tape carrying none, with none given, fails: the caller asked
  for a proof the tape cannot give.

:func:`proof_line` builds the tape's last line for :func:`recorder.export.export_sessions`
from the log, and refuses if the log no longer matches the checkpoint.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder.errors import TapeError
from recorder.integrity.checkpoint import Checkpoint, CheckpointError, open_note, parse_note
from recorder.store.merkle import ProofError, prove, root_from_proof, row_leaf
from recorder.store.seal import ARCHIVE_SESSION
from recorder.store.store import EventStore
from recorder.store.verify import row_problem
from recorder.tape import OpenParts, TapeProof, TapeRow, cut_short, iter_tape_rows

__all__ = [
    "TapeChain",
    "TapeCheck",
    "TapeProblem",
    "TapeVerification",
    "check_tape_chain",
    "proof_line",
    "verify_tape",
]


@dataclass(frozen=True, slots=True)
class TapeProblem:
    where: str
    """``file:line``."""
    position: int | None
    message: str


@dataclass(frozen=True, slots=True)
class TapeCheck:
    """How the tape fared against one checkpoint."""

    source: str
    checkpoint: Checkpoint
    ok: bool
    covered: int
    """Rows of the tape at positions the checkpoint covers (all proven when ``ok``)."""
    not_covered: int
    """Rows after the checkpoint's position: it says nothing about them."""
    message: str


@dataclass(slots=True)
class TapeVerification:
    rows: int = 0
    problems: list[TapeProblem] = field(default_factory=list)
    checks: list[TapeCheck] = field(default_factory=list)
    embedded: str | None = None
    """The signed note the tape carries, if any (checked only when a key is given)."""

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)


class TapeChain:
    """A tape's rows checked against their own chain fields, fed in file order.

    The rules of :func:`verify_tape` alone, shared with import (which refuses
    a tape that breaks any of them): every row's hash re-derives from its
    fields and its ``prev_hash`` (written, or the hash of the line before
    when that is the row at the position before); no position repeats; rows
    at consecutive positions link; each stream's ``seq`` runs from 0 without
    a gap; and a tape with chain fields has them on every line.

    Lean on purpose, since import runs it on every tape that carries hashes:
    a row linked to the line before it is proven by its own hash (which
    covers that link), so only the ends of each run of consecutive positions
    are kept for the cross-run checks :meth:`finish` makes. Memory grows with
    those runs (about one per session, more for sessions recorded at once)
    and with streams, not with rows.
    """

    def __init__(self) -> None:
        self.rows = 0
        self.plain = 0
        """Rows without chain fields."""
        self._expected_seq: defaultdict[str, int] = defaultdict(int)
        self._runs: list[_Run] = []
        self._run: _Run | None = None

    def add(self, item: TapeRow) -> tuple[int | None, str] | None:
        """The problem with this row (its position, what is wrong), or None."""
        self.rows += 1
        if item.position is None or item.hash is None:
            self.plain += 1
            self._run = None
            return None
        if item.prev_hash is None:
            self._run = None
            return item.position, "no prev_hash, and the line before is not the row before it"
        run = self._run
        if run is not None and run.last == item.position - 1:
            if item.prev_hash != run.last_hash:
                # A prev_hash written although the line before is its predecessor.
                self._run = None
                return (
                    item.position,
                    "chain broken: the row before it in the tape is not its predecessor",
                )
            run.last, run.last_hash = item.position, item.hash
        else:
            self._run = _Run(item.position, item.prev_hash, item.where, item.position, item.hash)
            self._runs.append(self._run)
        row = item.stored()
        message = row_problem(row, None)
        stream = row.exchange_id if row.exchange_id is not None else row.session_id
        if stream == ARCHIVE_SESSION and stream not in self._expected_seq:
            # Archive files hold the log's seals too; earlier ones are in earlier files.
            self._expected_seq[stream] = row.seq
        if message is None and row.seq != self._expected_seq[stream]:
            message = (
                f"sequence gap in stream {stream}: seq {row.seq}, "
                f"expected {self._expected_seq[stream]}"
            )
        self._expected_seq[stream] = row.seq + 1
        return None if message is None else (row.position, message)

    def finish(self, path: Path) -> list[TapeProblem]:
        """What only the whole tape shows: repeated positions, runs that do not link."""
        problems: list[TapeProblem] = []
        # Sessions follow one another in a tape, so a row's predecessor may come later in it.
        by_last = {run.last: run for run in self._runs}
        ordered = sorted(self._runs, key=lambda run: run.first)
        reached = 0
        for run in ordered:
            if run.first <= reached:
                problems.append(
                    TapeProblem(run.where, run.first, f"position {run.first} appears twice")
                )
            reached = max(reached, run.last)
        for run in ordered:
            previous = by_last.get(run.first - 1)
            if previous is not None and previous.last_hash != run.prev_hash:
                problems.append(
                    TapeProblem(
                        run.where,
                        run.first,
                        "chain broken: the row before it in the tape is not its predecessor",
                    )
                )
        if self.plain and self.plain != self.rows:
            problems.append(
                TapeProblem(
                    str(path),
                    None,
                    f"{self.plain} line(s) carry no chain fields while the others do",
                )
            )
        return problems


@dataclass(slots=True)
class _Run:
    """Rows at consecutive positions on consecutive lines of a tape."""

    first: int
    prev_hash: str
    """The hash the first row names as its predecessor's."""
    where: str
    last: int
    last_hash: str


def check_tape_chain(path: Path, rows: Iterable[TapeRow | TapeProof]) -> Iterator[TapeRow]:
    """``rows`` passed through, refused at the first that breaks :class:`TapeChain`'s rules.

    For import: a :class:`~recorder.errors.TapeError` naming the line and
    position, raised while the tape is read, before anything is stored.
    Rows without chain fields pass as they are (a tape may carry none).
    """
    chain = TapeChain()
    for item in rows:
        if isinstance(item, TapeProof):
            continue
        found = chain.add(item)
        if found is not None:
            position, message = found
            raise TapeError(f"{item.where} (position {position}): {message}")
        yield item
    for problem in chain.finish(path):
        at = f" (position {problem.position})" if problem.position is not None else ""
        raise TapeError(f"{problem.where}{at}: {problem.message}")


def verify_tape(
    path: Path,
    *,
    key: Ed25519PublicKey | None = None,
    checkpoints: Sequence[tuple[str, Checkpoint]] = (),
) -> TapeVerification:
    """Check a tape alone, and against ``checkpoints`` and, given ``key``, the one it carries.

    A tape cut short (:class:`~recorder.tape.OpenParts`, the rule import
    applies) is a problem; an empty one, or one that carries no hashes, is
    a :class:`~recorder.errors.TapeError`. Given ``key`` and no
    ``checkpoints``, a tape that carries no checkpoint is a problem: the
    caller asked for a proof the tape cannot give.
    """
    result = TapeVerification()
    chain = TapeChain()
    parts = OpenParts()
    # Every row's hash, for the Merkle proof against a checkpoint.
    hashes: dict[int, str] = {}
    proof: TapeProof | None = None

    def problem(where: str, position: int | None, message: str) -> None:
        if len(result.problems) < 20:
            result.problems.append(TapeProblem(where, position, message))

    for item in iter_tape_rows(path):
        if isinstance(item, TapeProof):
            if proof is not None:
                problem(item.where, None, "a tape has at most one proof line")
            proof = item
            continue
        result.rows += 1
        parts.add(item.event)
        if proof is not None:
            problem(item.where, None, "an event after the proof line")
        found = chain.add(item)
        if found is not None:
            problem(item.where, *found)
        if item.position is not None and item.hash is not None:
            hashes.setdefault(item.position, item.hash)
    if not result.rows:
        raise TapeError(f"{path}: holds no event: there is nothing to verify")
    if chain.plain == result.rows:
        raise TapeError(
            f"{path} carries no hashes (exported with --no-hashes, or by an older codetape): "
            "there is nothing to verify"
        )
    for found_problem in chain.finish(path):
        problem(found_problem.where, found_problem.position, found_problem.message)
    cut = [part for listed in parts.by_session().values() for part in listed]
    if cut:
        problem(str(path), None, f"the tape is {cut_short(cut)}")
    if proof is not None:
        result.embedded = proof.checkpoint
    targets = list(checkpoints)
    if proof is not None and key is not None:
        try:
            carried = open_note(proof.checkpoint, key)
        except CheckpointError as exc:
            problem(proof.where, None, f"the checkpoint the tape carries: {exc}")
        else:
            # Checked too when others are given: a tape that says it is proven is held to it.
            if not any(cp.same_head(carried) for _, cp in targets):
                targets.append((f"carried by {path}", carried))
    elif key is not None and not targets:
        problem(
            str(path),
            None,
            "the tape carries no signed checkpoint to check against (export it with "
            "--checkpoint, or give --checkpoint FILE)",
        )
    for source, cp in targets:
        result.checks.append(_check(source, cp, hashes, proof))
    result.problems.sort(key=lambda p: p.position or 0)
    return result


def _check(
    source: str, cp: Checkpoint, hashes: dict[int, str], proof: TapeProof | None
) -> TapeCheck:
    leaves = {p - 1: row_leaf(h) for p, h in hashes.items() if p <= cp.size}
    covered, not_covered = len(leaves), len(hashes) - len(leaves)
    name = f"checkpoint {source} (position {cp.size})"

    def failed(message: str) -> TapeCheck:
        return TapeCheck(source, cp, False, covered, not_covered, f"{name}: {message}")

    nodes: list[bytes] = []
    if proof is not None:
        try:
            carried = parse_note(proof.checkpoint, proof.where)
        except CheckpointError:
            carried = None
        if carried is not None and carried.same_head(cp):
            try:
                nodes = [bytes.fromhex(n) for n in proof.nodes]
            except ValueError:
                return failed("the tape's proof holds a malformed hash")
    if not leaves:
        return failed("the tape holds no row at or before its position")
    try:
        root = root_from_proof(cp.size, leaves, nodes)
    except ProofError as exc:
        if not nodes:
            return failed(
                f"the tape holds {covered} of its {cp.size} rows and no proof for this "
                "checkpoint (export the tape with --checkpoint)"
            )
        return failed(f"the tape's proof does not fit it: {exc}")
    if root != cp.root:
        return failed(
            "the tape's rows are not the rows it signed: a row was altered, "
            "or the tape is not from this log"
        )
    return TapeCheck(
        source,
        cp,
        True,
        covered,
        not_covered,
        f"{name}: {covered} row(s) proven to be in the signed log",
    )


def proof_line(store: EventStore, note: str, positions: Iterable[int]) -> str:
    """The ``{"proof": ...}`` line tying rows at ``positions`` to the checkpoint in ``note``."""
    cp = parse_note(note)
    wanted = sorted({p - 1 for p in positions if p <= cp.size})
    captured: dict[int, bytes] = {}
    want = set(wanted)

    def leaves() -> Iterator[bytes]:
        for index, (position, digest) in enumerate(store.iter_hashes(cp.size)):
            if position != index + 1:
                raise CheckpointError(
                    f"position {index + 1} is missing from the log: no proof can be made"
                )
            leaf = row_leaf(digest)
            if index in want:
                captured[index] = leaf
            yield leaf

    nodes, complete = prove(cp.size, wanted, leaves())
    if not complete or root_from_proof(cp.size, captured, nodes) != cp.root:
        raise CheckpointError(
            f"the log no longer matches the checkpoint (position {cp.size}): no proof can be "
            "made (run `codetape verify --checkpoint`)"
        )
    return json.dumps(
        {"proof": {"checkpoint": note, "nodes": [n.hex() for n in nodes]}},
        separators=(",", ":"),
        ensure_ascii=False,
    )

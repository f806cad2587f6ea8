"""Tapes a third party can check: each row's chain hash, and a proof against a checkpoint.

Guarantees of :func:`verify_tape`:

* **Alone**, a tape with chain fields is checked for internal consistency:
  every row's hash re-derives from its fields and its ``prev_hash``; rows at
  consecutive positions link; no position repeats; each stream's ``seq``
  runs from 0 without a gap (a tape holds whole sessions). That catches an
  edited, truncated or spliced tape, but not a forger: anyone can compute
  the same hashes over rows of their own.
* **Against a checkpoint** signed by the given key, the tape's rows at
  positions up to the checkpoint's, with the proof the tape carries, must
  give the signed RFC 6962 root. That proves each of those rows is exactly
  the row the log held at that position when the checkpoint was signed
  (each row's hash commits to every field and its payload). A tape holding
  every row from 1 needs no proof. Rows after the checkpoint's position are
  counted as not covered by it.

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
from recorder.tape import TapeProof, iter_tape_rows

__all__ = ["TapeCheck", "TapeProblem", "TapeVerification", "proof_line", "verify_tape"]


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


def verify_tape(
    path: Path,
    *,
    key: Ed25519PublicKey | None = None,
    checkpoints: Sequence[tuple[str, Checkpoint]] = (),
) -> TapeVerification:
    """Check a tape alone, and against ``checkpoints`` (or, given ``key``, the one it carries)."""
    result = TapeVerification()
    hashes: dict[int, str] = {}
    links: dict[int, tuple[str, str]] = {}
    expected_seq: defaultdict[str, int] = defaultdict(int)
    proof: TapeProof | None = None
    plain = 0

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
        if proof is not None:
            problem(item.where, None, "an event after the proof line")
        if item.position is None or item.hash is None:
            plain += 1
            continue
        if item.prev_hash is None:
            problem(
                item.where,
                item.position,
                "no prev_hash, and the line before is not the row before it",
            )
            continue
        if item.position in hashes:
            problem(item.where, item.position, f"position {item.position} appears twice")
            continue
        row = item.stored()
        message = row_problem(row, None)
        stream = row.exchange_id if row.exchange_id is not None else row.session_id
        if stream == ARCHIVE_SESSION and stream not in expected_seq:
            # Archive files hold the log's seals too; earlier ones are in earlier files.
            expected_seq[stream] = row.seq
        if message is None and row.seq != expected_seq[stream]:
            message = (
                f"sequence gap in stream {stream}: seq {row.seq}, expected {expected_seq[stream]}"
            )
        expected_seq[stream] = row.seq + 1
        if message is not None:
            problem(item.where, row.position, message)
        hashes[row.position] = row.hash
        links[row.position] = (row.prev_hash, item.where)
    # Sessions follow one another in a tape, so a row's predecessor may come later in it.
    for position in sorted(links):
        prev, where = links[position]
        before = hashes.get(position - 1)
        if before is not None and before != prev:
            problem(
                where,
                position,
                "chain broken: the row before it in the tape is not its predecessor",
            )
    if result.rows and plain == result.rows:
        raise TapeError(
            f"{path} carries no hashes (exported with --no-hashes, or by an older codetape): "
            "there is nothing to verify"
        )
    if plain:
        problem(str(path), None, f"{plain} line(s) carry no chain fields while the others do")
    if proof is not None:
        result.embedded = proof.checkpoint
    targets = list(checkpoints)
    if not targets and proof is not None and key is not None:
        try:
            targets = [(f"carried by {path}", open_note(proof.checkpoint, key))]
        except CheckpointError as exc:
            problem(proof.where, None, f"the checkpoint the tape carries: {exc}")
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

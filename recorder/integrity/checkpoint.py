"""Signed checkpoints: the log's head, signed with Ed25519, kept outside the database.

Why this design. The hash chain lets ``verify`` find any row that no longer
fits its neighbours, but whoever can write the database can also recompute
every hash after a change. What stops that elsewhere is a hash that leaves
the writer's reach, signed:

* Certificate Transparency (RFC 6962, RFC 9162) logs sign a *tree head*
  (size, time, the root of a Merkle tree over all entries); clients check an
  entry against it with an inclusion proof, and two tree heads against each
  other with a consistency proof, without fetching the log.
* Trillian and the transparency-dev tools publish the same tree head as a
  *checkpoint* (c2sp.org/tlog-checkpoint): a small text of origin, size and
  root hash, signed as a *signed note* (c2sp.org/signed-note) with Ed25519,
  which witnesses can cosign by adding signature lines.
* AWS CloudTrail writes an hourly *digest file*, signed, listing the hash of
  each log file delivered in the hour and the previous digest's signature;
  validation re-hashes each file and walks the digest chain, so a file
  changed, removed or inserted after its digest was signed is caught, and
  the hour it happened in is known.

codetape takes the checkpoint form: a checkpoint's text is exactly a
tlog-checkpoint (origin, size = the head position, the RFC 6962 root of the
tree whose leaf ``p - 1`` is the chain hash of the row at position ``p``),
plus two extension lines: the chain hash of the head row with its format,
which ``verify`` compares as it re-derives the chain, and the signing time.
The note is signed by the log's key under the name ``origin``. So any
signed-note tool can check a codetape checkpoint, a witness can cosign it,
and the Merkle root lets a tape prove its rows are in the signed log with a
few hashes instead of the whole log (:mod:`recorder.integrity.tapes`). From
CloudTrail comes the habit of checkpointing often into a directory of files
(``codetape checkpoint --dir``): each is verified on its own, and the last one
that still matches dates a change to the events after it.

A checkpoint proves that the rows up to its position are exactly the rows
that were there when it was signed. It says nothing about rows appended
later, and nothing about rows written before it by someone who could already
write the database: sign often, and keep the key away from the database.

Guarantees: :func:`sign` and :func:`open_note` round-trip; :func:`open_note`
accepts a note only if a signature line under the checkpoint's origin, with
the given key's ID, verifies over the exact text (other signature lines,
such as witness cosignatures, are ignored, as signed-note requires); every
malformed note is a :class:`CheckpointError` naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recorder.atomic import atomic_text
from recorder.errors import CodetapeError
from recorder.integrity.keys import key_id

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "open_note",
    "parse_note",
    "read_note",
    "sign",
    "write_note",
]

_MAX_NOTE = 64 * 1024
_ORIGIN = re.compile(r"[^\s+]+")
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DASH = "\u2014"


class CheckpointError(CodetapeError):
    """A checkpoint that is malformed, unsigned by the given key, or does not match."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The signed facts about a log at one position."""

    origin: str
    """The log's identity, and the name its key signs under."""
    size: int
    """The head position: the checkpoint covers rows 1..size."""
    root: bytes
    """RFC 6962 root of the tree whose leaf p-1 is the chain hash of row p."""
    head_hash: str
    """The chain hash of the row at ``size`` (hex), in ``hash_format``."""
    hash_format: str
    signed_at: dt.datetime

    def text(self) -> str:
        """The note text: a tlog-checkpoint with two extension lines."""
        when = self.signed_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return (
            f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"
            f"chain-head {self.hash_format} {self.head_hash}\n"
            f"signed-at {when}\n"
        )

    def same_head(self, other: Checkpoint) -> bool:
        """True when both vouch for the same rows (time of signing aside)."""
        return (self.origin, self.size, self.root, self.head_hash) == (
            other.origin,
            other.size,
            other.root,
            other.head_hash,
        )


def sign(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> str:
    """The signed note for ``checkpoint``."""
    if not _ORIGIN.fullmatch(checkpoint.origin):
        raise CheckpointError(
            f"origin {checkpoint.origin!r} must be non-empty, without spaces or '+'"
        )
    text = checkpoint.text()
    signature = key.sign(text.encode())
    line = base64.b64encode(key_id(checkpoint.origin, key.public_key()) + signature).decode()
    return f"{text}\n{_DASH} {checkpoint.origin} {line}\n"


def _split(note: str, where: str) -> tuple[str, list[str]]:
    if len(note) > _MAX_NOTE:
        raise CheckpointError(f"{where}: too large for a checkpoint")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError(f"{where}: control characters are not allowed in a signed note")
    if not note.endswith("\n") or "\n\n" not in note:
        raise CheckpointError(f"{where}: not a signed note (no signature block)")
    cut = note.rindex("\n\n")
    text, signatures = note[: cut + 1], note[cut + 2 :].splitlines()
    if not signatures:
        raise CheckpointError(f"{where}: the note has no signature lines")
    return text, signatures


def parse_note(note: str, where: str = "checkpoint") -> Checkpoint:
    """The checkpoint a note states, WITHOUT checking any signature (see :func:`open_note`)."""
    text, _ = _split(note, where)
    lines = text.splitlines()
    if len(lines) < 5:
        raise CheckpointError(f"{where}: a codetape checkpoint has 5 lines of text")
    origin, size, root64, chain, signed = lines[:5]
    if not _ORIGIN.fullmatch(origin):
        raise CheckpointError(f"{where}: bad origin line")
    if not _SIZE.fullmatch(size):
        raise CheckpointError(f"{where}: bad tree size line")
    try:
        root = base64.b64decode(root64, validate=True)
    except binascii.Error:
        root = b""
    if len(root) != 32:
        raise CheckpointError(f"{where}: bad root hash line")
    chain_parts = chain.split(" ")
    if (
        len(chain_parts) != 3
        or chain_parts[0] != "chain-head"
        or not _HEX64.fullmatch(chain_parts[2])
    ):
        raise CheckpointError(f"{where}: not a codetape checkpoint (no chain-head line)")
    signed_parts = signed.split(" ")
    try:
        if len(signed_parts) != 2 or signed_parts[0] != "signed-at":
            raise ValueError
        signed_at = dt.datetime.strptime(signed_parts[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=dt.UTC
        )
    except ValueError:
        raise CheckpointError(f"{where}: bad signed-at line") from None
    return Checkpoint(
        origin=origin,
        size=int(size),
        root=root,
        head_hash=chain_parts[2],
        hash_format=chain_parts[1],
        signed_at=signed_at,
    )


def open_note(note: str, key: Ed25519PublicKey, where: str = "checkpoint") -> Checkpoint:
    """The checkpoint in ``note`` if ``key`` signed it under its origin; else CheckpointError."""
    checkpoint = parse_note(note, where)
    text, signatures = _split(note, where)
    wanted = key_id(checkpoint.origin, key)
    found = False
    for line in signatures:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise CheckpointError(f"{where}: malformed signature line")
        if parts[1] != checkpoint.origin:
            continue  # another signer (a witness): not ours to check
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise CheckpointError(f"{where}: malformed signature line") from None
        if len(blob) < 4 or blob[:4] != wanted:
            continue  # same name, another key
        found = True
        try:
            key.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise CheckpointError(
                f"{where}: the signature does not verify: the checkpoint was altered "
                "or signed by another key"
            ) from None
    if not found:
        raise CheckpointError(f"{where}: not signed by this key (no signature for it)")
    return checkpoint


def read_note(path: Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    if len(data) > _MAX_NOTE:
        raise CheckpointError(f"{path}: too large for a checkpoint")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text, so not a checkpoint") from None


def write_note(note: str, path: Path) -> None:
    """Write ``note`` to ``path`` atomically (temporary file beside it, then rename)."""
    # A checkpoint is public: 0666 minus the umask, as any file the user writes.
    with atomic_text(Path(path), what="a checkpoint", error=CheckpointError) as out:
        out.write(note)

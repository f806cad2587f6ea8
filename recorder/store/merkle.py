"""The RFC 6962 Merkle tree over the log's row hashes, and proofs for sets of rows.

Guarantees: :func:`leaf_hash`, :func:`node_hash`, :class:`Frontier` and the
tree shape of :func:`prove` / :func:`root_from_proof` are exactly those of
RFC 6962 section 2.1 (RFC 9162 section 2.1): a leaf is ``SHA-256(0x00 ||
data)``, an inner node ``SHA-256(0x01 || left || right)``, a tree of ``n >
1`` leaves splits at the largest power of two below ``n``, and the empty tree
hashes to ``SHA-256("")``; the tests check the reference roots every RFC 6962
implementation shares. So a checkpoint's root is the one any Certificate
Transparency or transparency-dev tool would compute from the same leaves.

The leaf for the row at position ``p`` is leaf index ``p - 1`` with data the
32 bytes of that row's chain hash (``sha256-v1``, see
:mod:`recorder.store.hashing`), which already commits to every field of the
row, its position and its predecessor.

:func:`prove` writes a *multi-leaf* inclusion proof: the roots of the largest
subtrees that hold none of the wanted leaves, in left-to-right order. For one
leaf these are the RFC 9162 audit path (in another order); for a session whose
rows are contiguous in the log they are about ``2 log2(n)`` hashes whatever the
session's length. Building it reads every leaf hash once, in order, and keeps
``O(log n)`` of them; checking it needs only the wanted leaves and the proof.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence

__all__ = [
    "EMPTY_ROOT",
    "Frontier",
    "ProofError",
    "leaf_hash",
    "node_hash",
    "prove",
    "root_from_proof",
    "row_leaf",
]

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not fit the tree it claims to be for."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def row_leaf(row_hash: str) -> bytes:
    """The leaf hash of a row given its hex chain hash."""
    try:
        data = bytes.fromhex(row_hash)
    except ValueError:  # a tampered row: it fails its own check; its leaf must still differ
        data = row_hash.encode()
    return leaf_hash(data)


class Frontier:
    """The root of a growing list of leaves, keeping one hash per set bit of its size.

    ``_stack`` holds the roots of the perfect subtrees the leaves so far
    decompose into, largest (leftmost) first.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash (already ``leaf_hash``-ed)."""
        stack = self._stack
        stack.append(leaf)
        self.size += 1
        n = self.size
        while not n & 1:  # two equal perfect subtrees on top: merge them
            right = stack.pop()
            stack[-1] = node_hash(stack[-1], right)
            n >>= 1

    def state(self) -> list[str]:
        """The subtree roots (hex), enough with :attr:`size` to carry on (see :meth:`restore`)."""
        return [node.hex() for node in self._stack]

    @classmethod
    def restore(cls, size: int, state: list[str]) -> Frontier:
        """The frontier of ``size`` leaves whose :meth:`state` was ``state``."""
        if len(state) != bin(size).count("1"):
            raise ValueError(f"a frontier of {size} leaves has {bin(size).count('1')} roots")
        frontier = cls()
        frontier.size, frontier._stack = size, [bytes.fromhex(node) for node in state]
        return frontier

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        acc = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            acc = node_hash(left, acc)
        return acc


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (for ``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def prove(size: int, wanted: Sequence[int], leaves: Iterator[bytes]) -> tuple[list[bytes], bool]:
    """The multi-leaf proof for leaf indexes ``wanted`` (sorted) in the tree of ``size`` leaves.

    ``leaves`` yields the leaf hashes of indexes ``0 .. size-1`` in order; it
    is read exactly ``size`` times. Returns the proof and whether every leaf
    was there (False when ``leaves`` ran out early).
    """
    proof: list[bytes] = []
    complete = True

    def subtree(count: int) -> bytes:
        nonlocal complete
        frontier = Frontier()
        for _ in range(count):
            leaf = next(leaves, None)
            if leaf is None:
                complete = False
                break
            frontier.append(leaf)
        return frontier.root()

    def walk(lo: int, hi: int) -> None:
        nonlocal complete
        i = bisect_left(wanted, lo)
        if i == len(wanted) or wanted[i] >= hi:
            proof.append(subtree(hi - lo))
        elif hi - lo == 1:
            if next(leaves, None) is None:
                complete = False
        else:
            k = _split(hi - lo)
            walk(lo, lo + k)
            walk(lo + k, hi)

    if size > 0:
        walk(0, size)
    return proof, complete


def root_from_proof(size: int, leaves: Mapping[int, bytes], proof: Sequence[bytes]) -> bytes:
    """The root that ``leaves`` (index -> leaf hash) and ``proof`` give for a tree of ``size``.

    Raises :class:`ProofError` if a leaf lies outside the tree or the proof
    has too few or too many hashes for that set of leaves.
    """
    wanted = sorted(leaves)
    if wanted and (wanted[0] < 0 or wanted[-1] >= size):
        raise ProofError(f"leaf {wanted[-1]} is outside a tree of {size} leaves")
    if size == 0:
        if proof:
            raise ProofError("an empty tree has no proof")
        return EMPTY_ROOT
    nodes = iter(proof)
    used = 0

    def walk(lo: int, hi: int) -> bytes:
        nonlocal used
        i = bisect_left(wanted, lo)
        if i == len(wanted) or wanted[i] >= hi:
            node = next(nodes, None)
            if node is None:
                raise ProofError(f"the proof is too short for a tree of {size} leaves")
            used += 1
            return node
        if hi - lo == 1:
            return leaves[lo]
        k = _split(hi - lo)
        return node_hash(walk(lo, lo + k), walk(lo + k, hi))

    root = walk(0, size)
    if used != len(proof):
        raise ProofError(f"the proof has {len(proof) - used} hash(es) too many")
    return root

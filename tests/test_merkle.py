"""The Merkle tree is RFC 6962's, and multi-leaf proofs verify exactly the leaves they cover."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.store.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    leaf_hash,
    node_hash,
    prove,
    root_from_proof,
)

# The reference leaves and roots shared by RFC 6962 implementations (Certificate
# Transparency's and transparency-dev/merkle's test data).
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243",
          "5051525354555657", "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# RFC 9162 audit paths in the same tree of 8: (leaf index, path from the leaf up).
AUDIT_PATHS = {
    0: [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    5: [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962's MTH, written as the RFC states it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def test_roots_match_the_rfc_6962_reference() -> None:
    hashes = [leaf_hash(d) for d in LEAVES]
    assert EMPTY_ROOT.hex() == ROOTS[0]
    for size in range(len(LEAVES) + 1):
        frontier = Frontier()
        for h in hashes[:size]:
            frontier.append(h)
        assert frontier.root().hex() == ROOTS[size], size
        assert frontier.size == size


@pytest.mark.parametrize("index", sorted(AUDIT_PATHS))
def test_a_one_leaf_proof_is_the_rfc_9162_audit_path(index: int) -> None:
    hashes = [leaf_hash(d) for d in LEAVES]
    proof, complete = prove(8, [index], iter(hashes))
    assert complete
    assert sorted(p.hex() for p in proof) == sorted(AUDIT_PATHS[index])
    assert root_from_proof(8, {index: hashes[index]}, proof).hex() == ROOTS[8]


@given(
    size=st.integers(min_value=1, max_value=200),
    picks=st.lists(st.integers(min_value=0, max_value=199), max_size=30),
)
def test_any_set_of_leaves_proves_into_any_tree(size: int, picks: list[int]) -> None:
    hashes = [leaf_hash(i.to_bytes(2, "big")) for i in range(size)]
    wanted = sorted({p % size for p in picks})
    proof, complete = prove(size, wanted, iter(hashes))
    assert complete
    known = {i: hashes[i] for i in wanted}
    assert root_from_proof(size, known, proof) == reference_root(hashes)
    if wanted:
        # Any changed leaf gives another root.
        forged = {**known, wanted[0]: leaf_hash(b"forged")}
        assert root_from_proof(size, forged, proof) != reference_root(hashes)
    if proof:
        with pytest.raises(ProofError, match="too short"):
            root_from_proof(size, known, proof[:-1])
    with pytest.raises(ProofError, match="too many"):
        root_from_proof(size, known, [*proof, EMPTY_ROOT])


def test_a_contiguous_run_needs_a_logarithmic_proof() -> None:
    size = 100_000
    hashes = (leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    proof, complete = prove(size, list(range(40_000, 45_000)), hashes)
    assert complete
    assert len(proof) <= 2 * size.bit_length()


def test_a_leaf_outside_the_tree_and_a_short_leaf_source_are_refused() -> None:
    with pytest.raises(ProofError, match="outside"):
        root_from_proof(4, {4: EMPTY_ROOT}, [])
    assert prove(8, [1], iter([leaf_hash(b"x")] * 5))[1] is False

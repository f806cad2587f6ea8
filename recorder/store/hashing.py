"""The hash chain over the whole log.

Every row's hash covers its position, its predecessor's hash, every field and
its payload, so altering, removing, inserting or reordering any row breaks the
chain at that row. The chain runs over the whole log, not per exchange: only
that detects a whole exchange or session being removed, and appends are
serialised anyway (see :mod:`recorder.store.store`) so that projections can
read by position without missing a late commit; a global chain costs nothing
more. ``hash_format`` tags the rule so a future change of hashing is
detectable rather than reported as tampering.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["GENESIS", "HASH_FORMAT", "event_hash"]

HASH_FORMAT = "sha256-v1"
GENESIS = "0" * 64


def event_hash(
    prev_hash: str,
    position: int,
    session_id: str,
    exchange_id: str | None,
    seq: int,
    kind: str,
    recorded_at_ns: int,
    offset_ns: int | None,
    sse_event: str | None,
    sse_type: str | None,
    sequence_number: int | None,
    response_id: str | None,
    meta_json: str,
    payload: bytes,
) -> str:
    """The ``sha256-v1`` hash of one row given its predecessor's hash."""
    # A JSON array is an unambiguous encoding of the scalar fields; the payload
    # goes last, after a separator no JSON text contains unescaped.
    header = json.dumps(
        [
            HASH_FORMAT,
            prev_hash,
            position,
            session_id,
            exchange_id,
            seq,
            kind,
            recorded_at_ns,
            offset_ns,
            sse_event,
            sse_type,
            sequence_number,
            response_id,
            meta_json,
        ],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    digest = hashlib.sha256(header.encode("ascii"))
    digest.update(b"\n")
    digest.update(payload)
    return digest.hexdigest()

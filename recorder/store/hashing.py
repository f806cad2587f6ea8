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
import json.encoder as _json_encoder
from collections.abc import Callable
from typing import Any

__all__ = [
    "GENESIS",
    "HASH_FORMAT",
    "event_digest",
    "event_hash",
    "row_digest",
    "text",
    "texts",
]

HASH_FORMAT = "sha256-v1"
GENESIS = "0" * 64

_sha256 = hashlib.sha256


def _dumps_header(fields: list[Any]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True)


def _header_encoder() -> Callable[[list[Any]], str]:
    """``_dumps_header``, minus the ~2 µs per call ``json.dumps`` spends building an encoder.

    Every appended row is hashed, so this is on the store's hot path. The C
    encoder below is built with the arguments ``json.dumps`` gives it for these
    options, so the text is identical. It checks no circular references (the
    header holds scalars only), which also keeps it stateless, hence safe to
    share between threads. Without the C accelerator, fall back to json.dumps.
    """
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:
        return _dumps_header
    default = json.JSONEncoder().default  # the same TypeError as json.dumps on a bad field
    encode = make(
        None, default, _json_encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )

    def encode_header(fields: list[Any]) -> str:
        return "".join(encode(fields, 0))

    return encode_header


_encode_header = _header_encoder()


def _seal(header: str, payload: bytes) -> bytes:
    """The ``sha256-v1`` digest of a row from its header's JSON text and its payload."""
    # The payload goes last, after a separator no JSON text contains unescaped.
    digest = _sha256(header.encode("ascii"))
    digest.update(b"\n")
    digest.update(payload)
    return digest.digest()


def event_digest(
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
) -> bytes:
    """The ``sha256-v1`` hash of one row given its predecessor's hash, as 32 bytes.

    The rule is unchanged by the lean row (0005): it covers the public values
    (ids, kind and names as text, meta as ``{}`` when empty, the payload
    uncompressed), whatever the row stores in their place.
    """
    # A JSON array is an unambiguous encoding of the scalar fields.
    header = _encode_header(
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
        ]
    )
    return _seal(header, payload)


_OPEN = _encode_header([HASH_FORMAT])[:-1] + ","
_NULL = "null"
_esc: Callable[[str], str] = (
    getattr(_json_encoder, "c_encode_basestring_ascii", None)
    or _json_encoder.py_encode_basestring_ascii
)


def text(value: str | None) -> str:
    """The JSON text of one header field (a str or None; anything else: TypeError)."""
    return _NULL if value is None else _esc(value)


def texts(first: str | None, second: str | None) -> str:
    """The JSON texts of two header fields, comma-joined: one part of :func:`row_digest`.

    Each is a str or None (a str subclass is text too); anything else raises
    TypeError, so that a caller can fall back to :func:`event_digest`.
    """
    return f"{_NULL if first is None else _esc(first)},{_NULL if second is None else _esc(second)}"


def row_digest(
    prev_hash: str,
    position: int,
    ids: str,
    seq: int,
    kind: str,
    recorded_at_ns: int,
    offset_ns: int | None,
    names: str,
    sequence_number: int | None,
    tail: str,
    payload: bytes,
) -> bytes:
    """:func:`event_digest`, its text fields given as JSON text (see :func:`texts`).

    ``ids`` is ``texts(session_id, exchange_id)``, ``kind`` ``text(kind)``,
    ``names`` ``texts(sse_event, sse_type)``, ``tail``
    ``texts(response_id, meta_json)``. An append computes each of these once
    per batch for all the events that share them (the frames of one stream
    do), and per event only formats its ints and hashes. An int is hashed as
    the column stores it (a bool as 1 or 0, which is what verify reads back);
    anything but an int or None where one belongs raises ValueError or
    TypeError (then use :func:`event_digest`, whose encoder decides).
    """
    header = (
        f'{_OPEN}"{prev_hash}",{position:d},{ids},{seq:d},{kind},{recorded_at_ns:d},'
        f"{_NULL if offset_ns is None else f'{offset_ns:d}'},{names},"
        f"{_NULL if sequence_number is None else f'{sequence_number:d}'},{tail}]"
    )
    return _seal(header, payload)


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
    """The ``sha256-v1`` hash of one row given its predecessor's hash, as 64 hex digits."""
    return event_digest(
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
        payload,
    ).hex()

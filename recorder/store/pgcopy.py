"""The lean row in PostgreSQL's binary COPY format, built mostly before the write lock.

Guarantees: a row's fields are built in three parts. :func:`shape_fields`
encodes the columns the events of one stream share (their session,
exchange, names, response, kind and hash format keys), once per stream
and batch; :func:`row_body` the event's own columns (its times and
numbers, item key, codec, meta and payload) followed by those shared
fields; under the lock :func:`row` puts ``position`` and ``seq`` (the
columns that depend on the log's head, or, for a ``seq`` the store
assigns, on the stream's) before it and the hash after it.
:data:`COPY_EVENTS` is the statement whose column list matches that order,
and :func:`copy_rows` sends finished rows through it in one statement (one
trigger firing, one round trip per block), raising driver errors as
SQLAlchemy's, like every other statement the store runs, so
:func:`recorder.store.engine.translate_errors` turns them into the store's.
A value outside its column's range fails with :class:`StoreError` naming
the column, as an INSERT would, before anything is sent.

The format (PostgreSQL's "Binary Format" of COPY): a signature, then per row
the field count (int16) and per field its length (int32, -1 for NULL) and
its bytes in the type's binary send format (big-endian integers, a bytea's
bytes, a text's bytes in the client encoding), then -1 as int16.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import sqlalchemy as sa

from recorder.errors import StoreError
from recorder.store.pgwire import driver, sqlalchemy_errors

__all__ = ["COPY_EVENTS", "client_encoding", "copy_rows", "row", "row_body", "shape_fields"]

# position and seq first (they are put in under the lock), then the event's
# own fields, then those its stream shares (encoded once per batch), hash last.
_COLUMNS = (
    "position",
    "seq",
    "recorded_at_ns",
    "offset_ns",
    "sequence_number",
    "item_key",
    "codec",
    "meta",
    "payload",
    "session_key",
    "exchange_key",
    "sse_event_key",
    "sse_type_key",
    "response_key",
    "kind_key",
    "hash_format_key",
    "hash",
)
COPY_EVENTS = f"COPY events ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_HEAD = struct.Struct(">hiqii")  # field count, position (int8), seq (int4)
_HASH = b"\x00\x00\x00\x20"  # 32 bytes follow
_INT8 = struct.Struct(">iq")
_INT4 = struct.Struct(">ii")
_INT2 = struct.Struct(">ih")
_LENGTH = struct.Struct(">i")
# recorded_at_ns, offset_ns, sequence_number: every SSE frame has all three.
_TIMES = struct.Struct(">iqiqii")
# Bytes per write to the driver: big enough that few calls cross into libpq,
# small enough that the server stores the first rows of a batch while the
# caller still makes the rest (and a huge batch is not one buffer first).
_BLOCK = 1 << 16


def _int8(value: int | None, column: str) -> bytes:
    if value is None:
        return _NULL
    try:
        return _INT8.pack(8, value)
    except struct.error:
        raise StoreError(f"{column} {value} is out of range for a bigint") from None


def shape_fields(
    session_key: int,
    exchange_key: int | None,
    sse_event_key: int | None,
    sse_type_key: int | None,
    response_key: int | None,
    kind_key: int,
    hash_format_key: int,
) -> bytes:
    """The fields of the columns a stream's events share (keys: always in range)."""
    p4, p2, null = _INT4.pack, _INT2.pack, _NULL
    return b"".join(
        (
            p4(4, session_key),
            null if exchange_key is None else p4(4, exchange_key),
            null if sse_event_key is None else p2(2, sse_event_key),
            null if sse_type_key is None else p2(2, sse_type_key),
            null if response_key is None else p4(4, response_key),
            p2(2, kind_key),
            p2(2, hash_format_key),
        )
    )


def row_body(
    recorded_at_ns: int,
    offset_ns: int | None,
    sequence_number: int | None,
    item_key: int | None,
    codec: int | None,
    meta: bytes | None,
    payload: bytes,
    shared: bytes,
) -> bytes:
    """The row's fields between ``seq`` and ``hash``: the event's own, then ``shared``.

    ``meta`` is encoded text, or None; ``shared`` the :func:`shape_fields`
    of the event's stream.
    """
    # One expression, no call per field: this runs for every appended event.
    try:
        if offset_ns is not None and sequence_number is not None:
            times = _TIMES.pack(8, recorded_at_ns, 8, offset_ns, 4, sequence_number)
        else:
            times = b"".join(
                (
                    _INT8.pack(8, recorded_at_ns),
                    _NULL if offset_ns is None else _INT8.pack(8, offset_ns),
                    _NULL if sequence_number is None else _INT4.pack(4, sequence_number),
                )
            )
        return b"".join(
            (
                times,
                _NULL if item_key is None else _INT4.pack(4, item_key),
                _NULL if codec is None else _INT2.pack(2, codec),
                _NULL if meta is None else _LENGTH.pack(len(meta)) + meta,
                _LENGTH.pack(len(payload)),
                payload,
                shared,
            )
        )
    except struct.error:
        pass
    # Name the column that does not fit (the keys and codec always do: item
    # keys are ids, codecs shipped dictionary ids).
    _int8(recorded_at_ns, "recorded_at_ns")
    _int8(offset_ns, "offset_ns")
    if sequence_number is not None and not -(2**31) <= sequence_number < 2**31:
        raise StoreError(f"sequence_number {sequence_number} is out of range for an integer")
    raise StoreError("a value is out of range for its column")


def row(position: int, seq: int, body: bytes, digest: bytes) -> bytes:
    """One whole tuple: ``position``, ``seq``, the :func:`row_body`, the 32-byte hash."""
    try:
        head = _HEAD.pack(len(_COLUMNS), 8, position, 4, seq)
    except struct.error:
        raise StoreError(f"seq {seq} is out of range for an integer") from None
    return head + body + _HASH + digest


def client_encoding(conn: sa.Connection) -> str:
    """The Python codec of the connection's client encoding: how text fields are sent."""
    return driver(conn).info.encoding


def copy_rows(conn: sa.Connection, rows: Iterable[bytes]) -> None:
    """COPY the tuples ``rows`` into ``events`` in the connection's transaction.

    ``rows`` may be made as they are sent: the data goes out in blocks.
    """
    with (
        sqlalchemy_errors(conn, COPY_EVENTS),
        driver(conn).cursor() as cursor,
        cursor.copy(COPY_EVENTS) as copy,
    ):
        block = [_SIGNATURE]
        size = 0
        for data in rows:
            block.append(data)
            size += len(data)
            if size >= _BLOCK:
                copy.write(b"".join(block))
                block, size = [], 0
        block.append(_TRAILER)
        copy.write(b"".join(block))

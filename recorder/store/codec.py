"""Payload compression: each row's payload alone, against a shipped zstd dictionary.

Guarantees:

* :func:`encode` returns ``(codec, stored)``: ``codec`` None means ``stored``
  is the payload itself; :data:`ELIDED` (0) that ``stored`` is an SSE frame
  without its leading ``event: NAME\ndata: `` line, which the row's
  ``sse_event`` already holds (frames where compression does not pay, or
  with compression off); otherwise ``codec`` is the id of the dictionary the
  payload was compressed against and ``stored`` one zstd frame (magicless,
  no checksum, no dictionary id: the row's ``codec`` column names the
  dictionary, the row's hash checks the bytes). ``decode(codec, stored,
  sse_event)`` gives the payload back, byte for byte, from that one row: no
  other row is needed.
* Dictionaries ship as package data (``dictionaries/frames-<id>.zdict``) and
  never change once shipped: a new training gets a new id, and old ids stay
  readable. A row naming an id this codetape does not ship fails with
  :class:`UnknownCodec` (a newer codetape wrote it), never with garbage.
* Before either, a payload's first ``"item_id":"ID"`` (an output item id,
  repeated in every delta frame of the item and never in the dictionary)
  loses its ``ID``, which :func:`encode` returns for the row's ``item_key``:
  ``decode`` puts it back at the first ``"item_id":"`` of what it restored.
* The hash chain covers the payload, not the stored bytes, so compression is
  invisible to verify, tapes and replay.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from importlib import resources

import zstandard

from recorder.errors import StoreError

__all__ = [
    "DEFAULT_CODEC",
    "ELIDED",
    "MIN_SIZE",
    "UnknownCodec",
    "decode",
    "encode",
    "encode_all",
    "encoder",
    "known_codecs",
]

DEFAULT_CODEC = 1
"""The dictionary new rows are compressed against."""
ELIDED = 0
"""Not compressed, but stored without the frame's ``event:`` line (see the module docstring)."""
MIN_SIZE = 48
"""Payloads shorter than this stay raw: a frame header and the row's codec cost more."""
# Level 3, not 1: level 1 took 1.46 us a frame against 2.56 (the fixtures'
# 2,021 frames, median 259 bytes) for 2% more bytes on recordings the
# dictionary was trained with, but 8% more on a recording it never saw
# (bench/storage.py --holdout: 0.63x against 0.58x, level 2 no better), and
# users' recordings are the unseen kind. The level is not stored: rows of any
# level decode alike.
_LEVEL = 3
_FORMAT = zstandard.FORMAT_ZSTD1_MAGICLESS


class UnknownCodec(StoreError):
    """A row names a compression dictionary this codetape does not ship."""


class _Codec:
    def __init__(self, codec: int, data: bytes) -> None:
        params = zstandard.ZstdCompressionParameters.from_level(
            _LEVEL, format=_FORMAT, write_checksum=0, write_dict_id=0, write_content_size=1
        )
        cdict = zstandard.ZstdCompressionDict(data)
        cdict.precompute_compress(compression_params=params)
        self.codec = codec
        self._dict = cdict
        self._params = params
        self._local = threading.local()  # zstd contexts are not thread-safe

    def _pair(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        pair: tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor] | None = getattr(
            self._local, "pair", None
        )
        if pair is None:
            pair = (
                zstandard.ZstdCompressor(dict_data=self._dict, compression_params=self._params),
                zstandard.ZstdDecompressor(dict_data=self._dict, format=_FORMAT),
            )
            self._local.pair = pair
        return pair

    def compress(self, payload: bytes) -> bytes:
        return self._pair()[0].compress(payload)

    def decompress(self, stored: bytes) -> bytes:
        return self._pair()[1].decompress(stored)


_codecs: dict[int, _Codec] = {}
_lock = threading.Lock()


def known_codecs() -> list[int]:
    """The dictionary ids this codetape ships."""
    folder = resources.files("recorder.store") / "dictionaries"
    ids = []
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith("frames-") and name.endswith(".zdict"):
            ids.append(int(name[len("frames-") : -len(".zdict")]))
    return sorted(ids)


def _get(codec: int) -> _Codec:
    found = _codecs.get(codec)
    if found is not None:
        return found
    with _lock:
        found = _codecs.get(codec)
        if found is None:
            entry = resources.files("recorder.store") / "dictionaries" / f"frames-{codec}.zdict"
            try:
                data = entry.read_bytes()
            except (FileNotFoundError, OSError):
                raise UnknownCodec(
                    f"a stored payload is compressed with dictionary {codec}, which this "
                    f"codetape does not ship (it knows {known_codecs()}): read this database "
                    "with the codetape that wrote it, or a newer one"
                ) from None
            found = _codecs[codec] = _Codec(codec, data)
    return found


def _prefix(sse_event: str) -> bytes:
    return b"event: " + sse_event.encode() + b"\ndata: "


_ITEM = b'"item_id":"'
# The id and its closing quote: the id is all the text up to the next quote.
_ID = re.compile(rb'[A-Za-z0-9_\-]{1,200}"')


def _cut_item(payload: bytes) -> tuple[str | None, bytes]:
    at = payload.find(_ITEM)
    if at < 0:
        return None, payload
    start = at + len(_ITEM)
    found = _ID.match(payload, start)
    if found is None:
        return None, payload
    end = found.end() - 1
    return payload[start:end].decode("ascii"), payload[:start] + payload[end:]


def encode(
    payload: bytes, codec: int | None = DEFAULT_CODEC, sse_event: str | None = None
) -> tuple[int | None, bytes, str | None]:
    """The payload as stored: ``(codec, stored, item_id)`` (see the module docstring).

    ``sse_event`` is the row's parsed ``event:`` name, if any. For many
    payloads, :func:`encoder` does the lookups once.
    """
    return encoder(codec)(payload, sse_event)


def encoder(
    codec: int | None = DEFAULT_CODEC,
) -> Callable[[bytes, str | None], tuple[int | None, bytes, str | None]]:
    """:func:`encode` with ``codec`` bound, for many payloads on this thread.

    The same result for every payload; it looks the dictionary and this
    thread's compressor up once, not per payload (an append encodes every
    row of its batch). Use it on the thread that made it only.
    """
    compress = None if codec is None else _get(codec)._pair()[0].compress
    cut, min_size = _cut_item, MIN_SIZE

    def encode_one(
        payload: bytes, sse_event: str | None = None
    ) -> tuple[int | None, bytes, str | None]:
        item, rest = cut(payload)
        compressed = compress(rest) if compress is not None and len(rest) >= min_size else None
        return _stored(codec, item, rest, compressed, sse_event)

    return encode_one


def _stored(
    codec: int | None,
    item: str | None,
    rest: bytes,
    compressed: bytes | None,
    sse_event: str | None,
) -> tuple[int | None, bytes, str | None]:
    """The row's ``(codec, stored, item_id)`` for a payload cut to ``rest`` (and ``item``),
    given ``rest`` compressed with ``codec`` (None: not tried)."""
    # Compressed only if that saves more than the codec column costs.
    if compressed is not None and len(compressed) + 2 < len(rest):
        return codec, compressed, item
    if sse_event is not None:
        head = _prefix(sse_event)
        if rest.startswith(head):
            return ELIDED, rest[len(head) :], item
    return None, rest, item


def encode_all(
    payloads: Sequence[bytes], sse_events: Sequence[str | None], codec: int | None = DEFAULT_CODEC
) -> list[tuple[int | None, bytes, str | None]]:
    """:func:`encode` of each payload (with the ``sse_event`` beside it), in one call.

    The same result as :func:`encode` payload by payload, but the payloads
    worth compressing are compressed in one call into zstd, which releases
    the GIL once for all of them instead of once each. That matters in a
    writer thread beside a busy client thread: each release hands the GIL to
    the client, and getting it back waits for the interpreter's switch
    interval (5 ms), so 400 frames compressed one by one took 1.8 s beside a
    busy Python thread, and 5.7 ms in one call (0.45 and 0.35 ms alone).
    Use it on one thread at a time (see :func:`encoder`).
    """
    cut, min_size = _cut_item, MIN_SIZE
    pieces = [cut(payload) for payload in payloads]
    compressed: dict[int, bytes] = {}
    if codec is not None:
        wanted = [i for i, (_, rest) in enumerate(pieces) if len(rest) >= min_size]
        if wanted:
            compressor = _get(codec)._pair()[0]
            multi = getattr(compressor, "multi_compress_to_buffer", None)
            if multi is not None and len(wanted) > 1:
                out = multi([pieces[i][1] for i in wanted])
                compressed = {i: out[n].tobytes() for n, i in enumerate(wanted)}
            else:  # the cffi backend has no batch call
                compressed = {i: compressor.compress(pieces[i][1]) for i in wanted}
    get = compressed.get
    return [
        _stored(codec, item, rest, get(i), sse_event)
        for i, ((item, rest), sse_event) in enumerate(zip(pieces, sse_events, strict=True))
    ]


def decode(
    codec: int | None, stored: bytes, sse_event: str | None = None, item_id: str | None = None
) -> bytes:
    """The payload a row stored as ``(codec, stored)``; ``sse_event``, ``item_id``: the row's."""
    if codec is None:
        rest = bytes(stored)
    elif codec == ELIDED:
        if sse_event is None:
            raise StoreError("a stored frame lacks its event line and its row has no event name")
        rest = _prefix(sse_event) + stored
    else:
        try:
            rest = _get(codec).decompress(stored)
        except zstandard.ZstdError as exc:
            raise StoreError(
                f"a stored payload does not decompress with dictionary {codec}: {exc}"
            ) from exc
    if item_id is None:
        return rest
    at = rest.find(_ITEM)
    if at < 0:
        raise StoreError("a stored payload lost its item id and has no place to put it back")
    at += len(_ITEM)
    return rest[:at] + item_id.encode("ascii") + rest[at:]

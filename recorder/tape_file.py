"""Tape files on disk, plain or zstd-compressed (``.jsonl.zst``).

Guarantees: :func:`open_tape_lines` reads a tape's lines whether the file is
plain UTF-8 or zstd-compressed, decided by the file's first bytes (the zstd
magic number), never by its name, and decompresses as a stream, so memory
stays bounded by one line whatever the tape's size. :func:`atomic_tape`
writes a tape atomically (:mod:`recorder.atomic`), compressed as a stream
when the target's name ends in ``.zst``. Every failure, a corrupt or cut
compressed stream included, is a :class:`~recorder.errors.TapeError` naming
the file.

Every zstd frame codetape writes carries zstd's content checksum (the low 32
bits of XXH64 over the decompressed bytes). Without it, most flipped bits in
the compressed data still decode, into other bytes, and a damaged tape
would import with changed payloads. The reader checks it whenever a frame
has one (zstd does so unless told not to, and nothing here tells it not to),
so a damaged tape is refused before its first event is used; tapes written
without it (by an older codetape) still read. The content size is not in the
frame header: a tape is compressed as a stream, before its size is known.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from recorder.atomic import atomic_bytes, atomic_text
from recorder.errors import TapeError

__all__ = ["ZSTD_MAGIC", "ZSTD_SUFFIX", "atomic_tape", "is_compressed", "open_tape_lines"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_SUFFIX = ".zst"
# A middle level: tapes compress about as well as at 19, many times faster.
_LEVEL = 9


_CHUNK = 1 << 14


class _Decompressed(io.RawIOBase):
    """The bytes of a zstd stream (one frame or several), read a chunk at a time.

    Unlike zstandard's own stream reader, a stream cut short mid-frame is an
    error here, not a quiet end: a truncated tape must not import as a shorter one.
    """

    def __init__(self, raw: IO[bytes], path: Path) -> None:
        import zstandard

        self._new = zstandard.ZstdDecompressor().decompressobj
        self._raw, self._path = raw, path
        self._obj = self._new()
        self._started = False
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = self._raw.read(_CHUNK)
            if not chunk:
                if self._started and not self._obj.eof:
                    raise TapeError(f"{self._path}: a damaged zstd-compressed tape (cut short)")
                return 0
            self._pending = self._feed(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _feed(self, chunk: bytes) -> bytes:
        self._started = True
        out = self._obj.decompress(chunk)
        while self._obj.eof and self._obj.unused_data:
            rest, self._obj = self._obj.unused_data, self._new()
            out += self._obj.decompress(rest)
        return out


class _TextOut:
    """A ``write(str)`` target that sends UTF-8 into a binary writer."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def write(self, text: str) -> int:
        self._out.write(text.encode("utf-8"))
        return len(text)


def is_compressed(path: Path) -> bool:
    """True when the file at ``path`` starts with the zstd magic number."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(ZSTD_MAGIC)) == ZSTD_MAGIC
    except OSError:
        return False


def open_tape_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Each line of the tape at ``path`` with its number from 1, newline kept."""
    try:
        raw = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise TapeError(f"cannot read tape {path}: {exc.strerror}") from None
    with raw:
        binary: IO[bytes] = raw
        compressed = raw.read(len(ZSTD_MAGIC)) == ZSTD_MAGIC
        raw.seek(0)
        if compressed:
            binary = io.BufferedReader(_Decompressed(raw, path), _CHUNK)
        text = io.TextIOWrapper(binary, encoding="utf-8", newline="\n")
        try:
            yield from enumerate(text, start=1)
        except UnicodeDecodeError:
            raise TapeError(f"{path}: not UTF-8 text, so not a tape") from None
        except Exception as exc:
            if compressed and type(exc).__name__ == "ZstdError":
                raise TapeError(f"{path}: a damaged zstd-compressed tape ({_why(exc)})") from None
            raise


def _why(exc: Exception) -> str:
    """zstd's reason, in the product's words when it is the checksum."""
    text = str(exc)
    if "checksum" in text.lower():
        return "its checksum does not match its content: bytes were changed"
    return text


@contextmanager
def atomic_tape(path: Path) -> Iterator[_TextOut | IO[str]]:
    """A text target that replaces ``path`` whole when the block ends (zstd for ``.zst``)."""
    if not Path(path).name.endswith(ZSTD_SUFFIX):
        with atomic_text(Path(path), what="a tape", error=TapeError) as out:
            yield out  # type: ignore[misc]
        return
    import zstandard

    with atomic_bytes(Path(path), what="a tape", error=TapeError) as raw:
        # The checksum is what lets a reader tell a damaged tape from a good one.
        compressor = zstandard.ZstdCompressor(level=_LEVEL, write_checksum=True)
        writer = compressor.stream_writer(
            raw,  # type: ignore[arg-type]  # it only calls write()
            closefd=False,
        )
        yield _TextOut(writer)
        writer.close()  # type: ignore[no-untyped-call]  # ends the zstd frame

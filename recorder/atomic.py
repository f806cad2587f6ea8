"""Atomic file writes: a temporary file beside the target, synced, renamed over it.

Guarantees: the target holds either what it held before or the whole new
content, never a part; only a new path or a regular file is replaced (through
a symlink, the file it points to), never a directory, a device, a pipe or a
socket, which are refused before anything is written; a new file gets the
permissions the umask gives (0666 minus the umask, not ``mkstemp``'s 0600), a
replaced file keeps its mode, and its owner where the process may set it; the
directory entry is synced after the rename. Every failure surfaces as the
caller's error class with one line naming the path, and leaves no temporary
file behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, AnyStr, Generic

from recorder.errors import CodetapeError

__all__ = ["atomic_bytes", "atomic_text", "writable_target"]

_KIND_NAMES = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
}


def writable_target(
    path: Path, *, what: str = "a file", error: type[CodetapeError] = CodetapeError
) -> tuple[Path, os.stat_result | None]:
    """The file to replace (a symlink followed) and its status; refuse what is not a file.

    Renaming over a device, a pipe or a directory would replace it with a
    regular file (or fail half-way), so only a new path or a regular file is
    accepted.
    """
    target = path.resolve() if path.is_symlink() else path
    try:
        status = target.stat()
    except FileNotFoundError:
        status = None
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror}") from None
    if status is not None and not stat.S_ISREG(status.st_mode):
        kind = _KIND_NAMES.get(stat.S_IFMT(status.st_mode), "not a regular file")
        raise error(
            f"cannot write {what} to {path}: it is {kind}; give a new file name "
            "or an existing regular file"
        )
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise error(f"cannot write {path}: directory {directory} does not exist")
    return target, status


def _temp_beside(
    target: Path, status: os.stat_result | None, error: type[CodetapeError]
) -> tuple[int, Path]:
    """A new temporary file beside ``target``: the target's mode if it exists, else umask's."""
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise error(f"cannot write {target}: {exc.strerror}") from None
        if status is not None:
            try:
                os.fchmod(fd, stat.S_IMODE(status.st_mode))
                if (status.st_uid, status.st_gid) != (os.geteuid(), os.getegid()):
                    os.fchown(fd, status.st_uid, status.st_gid)
            except OSError:
                pass  # keeping the owner is a courtesy only root can always pay
        return fd, candidate
    raise error(f"cannot write {target}: no free temporary name beside it")


class _Guarded(Generic[AnyStr]):
    """The open temporary file: a failed write is the caller's error, with the target's name.

    Only failures of this file's own writes are translated; an ``OSError``
    raised by the code producing the content passes through unchanged.
    """

    def __init__(self, out: IO[AnyStr], path: Path, error: type[CodetapeError]) -> None:
        self._out: IO[AnyStr] = out
        self._path, self._error = path, error

    def write(self, data: AnyStr) -> int:
        try:
            written: int = self._out.write(data)
        except OSError as exc:
            raise self._error(f"cannot write {self._path}: {exc.strerror}") from None
        return written


@contextmanager
def _atomic(path: Path, binary: bool, what: str, error: type[CodetapeError]) -> Iterator[IO[Any]]:
    path = Path(path)
    target, status = writable_target(path, what=what, error=error)
    fd, tmp = _temp_beside(target, status, error)
    try:
        # Text goes out as UTF-8 with "\n" newlines on every platform.
        encoding, newline = (None, None) if binary else ("utf-8", "\n")
        out: IO[Any] = os.fdopen(fd, "wb" if binary else "w", encoding=encoding, newline=newline)
        try:
            yield out
            try:
                out.flush()
                os.fsync(out.fileno())
                out.close()
            except OSError as exc:
                raise error(f"cannot write {path}: {exc.strerror}") from None
        finally:
            if not out.closed:
                # Closing flushes what is still buffered, which may fail again
                # (a full disk): the error already on its way says what went wrong.
                with contextlib.suppress(OSError):
                    out.close()
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise error(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_directory(target.parent)


@contextmanager
def atomic_text(
    path: Path, *, what: str = "a file", error: type[CodetapeError] = CodetapeError
) -> Iterator[_Guarded[str]]:
    """A UTF-8 text file (``\\n`` newlines) that replaces ``path`` when the block ends."""
    with _atomic(path, False, what, error) as out:
        yield _Guarded(out, Path(path), error)


@contextmanager
def atomic_bytes(
    path: Path, *, what: str = "a file", error: type[CodetapeError] = CodetapeError
) -> Iterator[_Guarded[bytes]]:
    """A binary file that replaces ``path`` when the block ends without an error."""
    with _atomic(path, True, what, error) as out:
        yield _Guarded(out, Path(path), error)


def _sync_directory(directory: Path) -> None:
    # The rename is durable once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

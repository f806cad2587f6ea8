"""Tapes: the portable, reviewable file form of sessions.

A tape is UTF-8 JSON Lines, one event per line, in log order. Payload bytes
are kept exactly: as ``"text"`` when they are valid UTF-8, else as ``"b64"``.
The first event of every session (its ``session_open``) carries ``"tape": 1``,
the format version; a reader refuses versions it does not know.

A tape exported from a log may also carry each row's place in that log's
hash chain, last on its line: ``"position"`` and ``"hash"``; ``"prev_hash"``
unless the line before is the row at the position before (whose hash it then
is); ``"hash_format"`` on the first line and wherever it changes. The tape may
end with one ``{"proof": ...}`` line: a signed checkpoint and the Merkle
proof that ties the tape's rows to it (see :mod:`recorder.integrity.tapes`).
Readers of events ignore all of these, so old readers, replay and import
read such a tape as before. Without them (``hashes=False``), export → import
into a fresh database → export gives a byte-identical file.

Writing is atomic: a tape is written to a temporary file beside the target
and renamed over it, so a failed export never leaves a half-written tape. Only
a new path or a regular file is ever replaced (never a directory, a device or
a pipe), and the permissions are those a new file or the replaced one would
have. :func:`incomplete_parts` names what a tape cut short leaves open.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from recorder.errors import TapeError
from recorder.events import Event, EventKind, StoredEvent, canonical_json

__all__ = [
    "PROOF_PREFIX",
    "TAPE_VERSION",
    "TapeProof",
    "TapeRow",
    "event_to_line",
    "incomplete_parts",
    "iter_tape_rows",
    "line_to_event",
    "read_tape",
    "write_tape",
    "write_tape_to",
]

TAPE_VERSION = 1
PROOF_PREFIX = '{"proof":'
_KINDS = {k.value for k in EventKind}


def event_to_line(ev: Event | StoredEvent, chain: Mapping[str, Any] | None = None) -> str:
    """One tape line (without the newline) for ``ev``; ``chain`` fields go last."""
    record: dict[str, Any] = {"kind": ev.kind.value}
    if ev.kind is EventKind.SESSION_OPEN:
        record["tape"] = TAPE_VERSION
    record["session"] = ev.session_id
    if ev.exchange_id is not None:
        record["exchange"] = ev.exchange_id
    record["seq"] = ev.seq
    record["at_ns"] = ev.recorded_at_ns
    if ev.offset_ns is not None:
        record["offset_ns"] = ev.offset_ns
    if ev.sse_event is not None:
        record["event"] = ev.sse_event
    if ev.sse_type is not None:
        record["type"] = ev.sse_type
    if ev.sequence_number is not None:
        record["sequence_number"] = ev.sequence_number
    if ev.response_id is not None:
        record["response_id"] = ev.response_id
    meta = ev.meta
    if meta:
        # Key order inside meta must not depend on who built the event.
        record["meta"] = json.loads(canonical_json(dict(meta)))
    if ev.payload:
        try:
            record["text"] = ev.payload.decode("utf-8")
        except UnicodeDecodeError:
            record["b64"] = base64.b64encode(ev.payload).decode("ascii")
    if chain:
        record.update(chain)
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    # Some line readers (Python's str.splitlines among them) break lines at
    # U+2028/U+2029; escaped, they stay inside their JSON string.
    if "\u2028" in line or "\u2029" in line:
        line = line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return line


def _optional(record: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = record.get(key)
    if value is not None and not isinstance(value, kind):
        raise TapeError(f"{where}: {key!r} must be {kind.__name__}")
    return value


def _record(line: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        problem = exc.msg.removesuffix(" at")  # "Invalid control character at"
        raise TapeError(f"{where}: not valid JSON ({problem} at column {exc.colno})") from None
    except RecursionError:
        raise TapeError(f"{where}: JSON nested too deeply to be a tape line") from None
    except ValueError:  # an integer past Python's digit limit
        raise TapeError(f"{where}: not valid JSON (a number with too many digits)") from None
    if not isinstance(record, dict):
        raise TapeError(f"{where}: a tape line must be a JSON object")
    return record


def line_to_event(line: str, where: str = "tape") -> Event:
    """Parse one tape line; ``where`` (e.g. ``"file.jsonl:12"``) prefixes any error."""
    return _record_to_event(_record(line, where), where)


def _record_to_event(record: dict[str, Any], where: str) -> Event:
    kind = record.get("kind")
    if kind not in _KINDS:
        raise TapeError(f"{where}: unknown event kind {kind!r}")
    version = record.get("tape")
    if kind == EventKind.SESSION_OPEN.value and version != TAPE_VERSION:
        raise TapeError(f"{where}: tape format version {version!r} is not {TAPE_VERSION}")
    session = record.get("session")
    seq = record.get("seq")
    at_ns = record.get("at_ns")
    if not isinstance(session, str) or not session:
        raise TapeError(f"{where}: missing session id")
    if not isinstance(seq, int) or seq < 0:
        raise TapeError(f"{where}: missing or negative seq")
    if not isinstance(at_ns, int):
        raise TapeError(f"{where}: missing at_ns")
    meta = record.get("meta", {})
    if not isinstance(meta, dict):
        raise TapeError(f"{where}: meta must be an object")
    if "text" in record and "b64" in record:
        raise TapeError(f"{where}: a line holds either text or b64, not both")
    if "b64" in record:
        try:
            payload = base64.b64decode(record["b64"], validate=True)
        except (ValueError, TypeError):
            raise TapeError(f"{where}: b64 payload is not valid base64") from None
    else:
        text = _optional(record, "text", str, where)
        payload = text.encode("utf-8") if text is not None else b""
    return Event(
        session_id=session,
        kind=EventKind(kind),
        seq=seq,
        exchange_id=_optional(record, "exchange", str, where),
        recorded_at_ns=at_ns,
        offset_ns=_optional(record, "offset_ns", int, where),
        payload=payload,
        meta=meta,
        sse_event=_optional(record, "event", str, where),
        sse_type=_optional(record, "type", str, where),
        sequence_number=_optional(record, "sequence_number", int, where),
        response_id=_optional(record, "response_id", str, where),
    )


def iter_tape(path: Path) -> Iterator[Event]:
    """Events of a tape file, lazily; raises :class:`TapeError` naming the bad line."""
    try:
        handle: IO[str] = open(path, encoding="utf-8", newline="\n")  # noqa: SIM115
    except OSError as exc:
        raise TapeError(f"cannot read tape {path}: {exc.strerror}") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip() or line.startswith(PROOF_PREFIX):
                    continue
                yield line_to_event(line, f"{path}:{number}")
        except UnicodeDecodeError:
            raise TapeError(f"{path}: not UTF-8 text, so not a tape") from None


@dataclass(frozen=True, slots=True)
class TapeRow:
    """A tape event with its place in the exporting log's chain (all None if it has none)."""

    event: Event
    where: str
    position: int | None
    hash: str | None
    prev_hash: str | None
    """As written, or implied by the line before (see the module docstring)."""
    hash_format: str | None


@dataclass(frozen=True, slots=True)
class TapeProof:
    """A tape's ``{"proof": ...}`` line."""

    checkpoint: str
    nodes: list[str]
    where: str


def _chain_field(record: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = _optional(record, key, kind, where)
    if kind is int and isinstance(value, bool):
        raise TapeError(f"{where}: {key!r} must be int")
    return value


def iter_tape_rows(path: Path) -> Iterator[TapeRow | TapeProof]:
    """A tape's events with their chain fields, and its proof line, in file order."""
    last: TapeRow | None = None
    for line, where in _lines(path):
        record = _record(line, where)
        if "proof" in record and "kind" not in record:
            proof = record["proof"]
            if (
                not isinstance(proof, dict)
                or not isinstance(proof.get("checkpoint"), str)
                or not isinstance(proof.get("nodes"), list)
                or not all(isinstance(n, str) for n in proof["nodes"])
            ):
                raise TapeError(f"{where}: malformed proof line")
            yield TapeProof(proof["checkpoint"], list(proof["nodes"]), where)
            continue
        event = _record_to_event(record, where)
        position = _chain_field(record, "position", int, where)
        digest = _chain_field(record, "hash", str, where)
        prev = _chain_field(record, "prev_hash", str, where)
        fmt = _chain_field(record, "hash_format", str, where)
        if (
            position is not None
            and prev is None
            and last is not None
            and last.position == position - 1
        ):
            prev = last.hash
        if position is not None and fmt is None and last is not None:
            fmt = last.hash_format
        last = TapeRow(event, where, position, digest, prev, fmt)
        yield last


def _lines(path: Path) -> Iterator[tuple[str, str]]:
    try:
        handle: IO[str] = open(path, encoding="utf-8", newline="\n")  # noqa: SIM115
    except OSError as exc:
        raise TapeError(f"cannot read tape {path}: {exc.strerror}") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield line, f"{path}:{number}"
        except UnicodeDecodeError:
            raise TapeError(f"{path}: not UTF-8 text, so not a tape") from None


def read_tape(path: Path) -> list[Event]:
    """All events of a tape, validated before anything is returned."""
    return list(iter_tape(path))


def incomplete_parts(events: Iterable[Event | StoredEvent]) -> list[str]:
    """What a tape's events leave unfinished: sessions never closed, exchanges never ended.

    Empty for a complete tape. A tape cut short (at a line boundary, so every
    line still parses) or exported while its session was being recorded has
    parts here; importing it as if complete would leave them open forever.
    """
    open_sessions: dict[str, str] = {}
    open_exchanges: dict[str, str] = {}
    numbers: dict[str, int] = {}
    for ev in events:
        if ev.kind is EventKind.SESSION_OPEN:
            open_sessions[ev.session_id] = str(ev.meta.get("name") or ev.session_id)
        elif ev.kind is EventKind.SESSION_CLOSE:
            open_sessions.pop(ev.session_id, None)
        elif ev.kind is EventKind.REQUEST and ev.exchange_id is not None:
            numbers[ev.session_id] = numbers.get(ev.session_id, 0) + 1
            meta = ev.meta
            open_exchanges[ev.exchange_id] = (
                f"exchange #{numbers[ev.session_id]} ({meta.get('method', '?')} "
                f"{meta.get('url', '?')}) never ended"
            )
        elif ev.kind is EventKind.EXCHANGE_END and ev.exchange_id is not None:
            open_exchanges.pop(ev.exchange_id, None)
    return [f"session {name!r} is never closed" for name in open_sessions.values()] + list(
        open_exchanges.values()
    )


_KIND_NAMES = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
}


def _writable_target(path: Path) -> tuple[Path, os.stat_result | None]:
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
        raise TapeError(f"cannot write {path}: {exc.strerror}") from None
    if status is not None and not stat.S_ISREG(status.st_mode):
        kind = _KIND_NAMES.get(stat.S_IFMT(status.st_mode), "not a regular file")
        raise TapeError(
            f"cannot write a tape to {path}: it is {kind}; give a new file name "
            "or an existing regular file"
        )
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise TapeError(f"cannot write {path}: directory {directory} does not exist")
    return target, status


def _temp_beside(target: Path, status: os.stat_result | None) -> tuple[int, Path]:
    """A new temporary file beside ``target``: the target's mode if it exists, else umask's.

    ``tempfile.mkstemp`` would make it 0600 whatever the umask, and the rename
    would then narrow a shared file's permissions.
    """
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise TapeError(f"cannot write {target}: {exc.strerror}") from None
        if status is not None:
            try:
                os.fchmod(fd, stat.S_IMODE(status.st_mode))
                if (status.st_uid, status.st_gid) != (os.geteuid(), os.getegid()):
                    os.fchown(fd, status.st_uid, status.st_gid)
            except OSError:
                pass  # keeping the owner is a courtesy only root can always pay
        return fd, candidate
    raise TapeError(f"cannot write {target}: no free temporary name beside it")


LastLine = Callable[[], str | None]


def _tape_lines(
    events: Iterable[Event | StoredEvent], hashes: bool, last_line: LastLine | None
) -> Iterator[tuple[str, bool]]:
    """Each tape line with its newline, and whether it is an event (not the proof)."""
    last_position: int | None = None
    last_format: str | None = None
    for ev in events:
        chain: dict[str, Any] | None = None
        if hashes and isinstance(ev, StoredEvent):
            chain = {"position": ev.position}
            if last_position != ev.position - 1:
                chain["prev_hash"] = ev.prev_hash
            chain["hash"] = ev.hash
            if ev.hash_format != last_format:
                chain["hash_format"] = ev.hash_format
            last_position, last_format = ev.position, ev.hash_format
        yield event_to_line(ev, chain) + "\n", True
    extra = last_line() if last_line is not None else None
    if extra is not None:
        yield extra + "\n", False


def write_tape_to(
    events: Iterable[Event | StoredEvent],
    out: IO[str],
    *,
    hashes: bool = False,
    last_line: LastLine | None = None,
) -> int:
    """Write ``events`` as tape lines to an open text stream; return the number of event lines."""
    count = 0
    for line, is_event in _tape_lines(events, hashes, last_line):
        out.write(line)
        count += is_event
    return count


def write_tape(
    events: Iterable[Event | StoredEvent],
    path: Path,
    *,
    hashes: bool = False,
    last_line: LastLine | None = None,
) -> int:
    """Write ``events`` as a tape at ``path`` atomically; return the number of event lines.

    ``hashes`` adds each stored event's chain fields; ``last_line``, called
    after the events are written, may give one more line (a proof) to end with.
    Only onto a new path or over a regular file (through a symlink, the file
    it points to); a directory, device, pipe or socket is refused with a
    :class:`TapeError` before anything is written. A new file gets the
    permissions the umask gives; a replaced file keeps its own.
    """
    path = Path(path)
    target, status = _writable_target(path)
    fd, tmp = _temp_beside(target, status)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            for line, is_event in _tape_lines(events, hashes, last_line):
                try:
                    out.write(line)
                except OSError as exc:
                    raise TapeError(f"cannot write {path}: {exc.strerror}") from None
                count += is_event
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise TapeError(f"cannot write {path}: {exc.strerror}") from None
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise TapeError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_directory(target.parent)
    return count


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

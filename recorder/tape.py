"""Tapes: the portable, reviewable file form of sessions.

A tape is UTF-8 JSON Lines, one event per line, in log order, optionally
zstd-compressed as a whole (``.jsonl.zst``: written so when the target's name
ends in ``.zst``, read as such whatever its name, see :mod:`recorder.tape_file`).
Payload bytes are kept exactly. The first event of every session (its
``session_open``) carries ``"tape": N``, the format version; the first line's
version is the whole tape's, and a reader refuses versions it does not know.

* Format 2 (written by default, :mod:`recorder.tape_lean`) leaves out what
  the lines before imply: the session and exchange ids, kinds, ``seq``,
  times (as differences), fields equal to the previous line's, and an SSE
  frame's event name, type and sequence number, which its ``data`` (the
  frame's JSON, unescaped) already says.
* Format 1 (still read; written with ``version=1``) spells every field out
  on every line; its payload is ``"text"`` when UTF-8, else ``"b64"``.

A tape exported from a log may also carry each row's place in that log's
hash chain, last on its line: ``"position"`` and ``"hash"``; ``"prev_hash"``
unless the line before is the row at the position before (whose hash it then
is); ``"hash_format"`` on the first line and wherever it changes. The tape may
end with one ``{"proof": ...}`` line: a signed checkpoint and the Merkle
proof that ties the tape's rows to it (see :mod:`recorder.integrity.tapes`).
Readers of events ignore all of these, so replay reads such a tape as one
without them; import checks the chain fields first
(:class:`recorder.integrity.tapes.TapeChain`). Without them
(``hashes=False``), export → import into a fresh database → export gives a
byte-identical file, in either format.

Writing is atomic: a tape is written to a temporary file beside the target
and renamed over it, so a failed export never leaves a half-written tape. Only
a new path or a regular file is ever replaced (never a directory, a device or
a pipe), and the permissions are those a new file or the replaced one would
have.

Every reader refuses an empty (or all blank) file with one line,
:func:`empty_tape`; :class:`OpenParts` is the one rule for a tape cut short
(a session never closed, an exchange never ended), which import, ``verify``,
``diff``, ``serve`` and replay refuse alike (see each for how to go on anyway).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recorder.errors import TapeError
from recorder.events import Event, EventKind, StoredEvent, canonical_json
from recorder.tape_file import atomic_tape, open_tape_lines
from recorder.tape_lean import (
    LEAN_VERSION,
    LeanReader,
    LeanWriter,
    json_line,
    meta_value,
    put_payload,
    take_payload,
)

if TYPE_CHECKING:
    from recorder.tape_line import LeanLine, TapeLine

__all__ = [
    "PROOF_PREFIX",
    "READ_VERSIONS",
    "TAPE_VERSION",
    "OpenParts",
    "TapeProof",
    "TapeRow",
    "check_whole",
    "cut_short",
    "empty_tape",
    "event_to_line",
    "incomplete_parts",
    "iter_tape_rows",
    "line_to_event",
    "read_tape",
    "write_tape",
    "write_tape_to",
]

TAPE_VERSION = LEAN_VERSION
"""The format version writers write."""
READ_VERSIONS = (1, LEAN_VERSION)
PROOF_PREFIX = '{"proof":'
_KIND_OF = {k.value: k for k in EventKind}


def event_to_line(ev: Event | StoredEvent, chain: Mapping[str, Any] | None = None) -> str:
    """One format 1 tape line (without the newline) for ``ev``; ``chain`` fields go last.

    Format 1 lines stand alone; format 2 lines depend on the lines before, so
    they come from a :class:`~recorder.tape_lean.LeanWriter` kept for the whole tape.
    """
    record: dict[str, Any] = {"kind": ev.kind.value}
    if ev.kind is EventKind.SESSION_OPEN:
        record["tape"] = 1
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
    if ev.meta:
        record["meta"] = meta_value(ev.meta)
    put_payload(record, ev.payload)
    if chain:
        record.update(chain)
    return json_line(record)


def line_to_event(line: str, where: str = "tape") -> Event:
    """Parse one format 1 tape line; ``where`` (e.g. ``"file.jsonl:12"``) prefixes any error."""
    from recorder.tape_line import parse_line

    return _to_event(parse_line(line, where), where)


def _to_event(record: TapeLine, where: str) -> Event:
    """The event of a validated line, after the checks that span fields."""
    kind = _KIND_OF[record.kind]
    if kind is EventKind.SESSION_OPEN and record.tape != 1:
        raise TapeError(f"{where}: {_version_problem(record.tape, 1)}")
    if record.text is not None and record.b64 is not None:
        raise TapeError(f"{where}: a line holds either text or b64, not both")
    payload = take_payload(record.text, record.b64, where)
    return Event(
        session_id=record.session,
        kind=kind,
        seq=record.seq,
        exchange_id=record.exchange,
        recorded_at_ns=record.at_ns,
        offset_ns=record.offset_ns,
        payload=payload,
        meta=record.meta,
        sse_event=record.event,
        sse_type=record.type,
        sequence_number=record.sequence_number,
        response_id=record.response_id,
    )


def _version_problem(found: object, expected: int) -> str:
    if found not in READ_VERSIONS:
        known = " and ".join(str(v) for v in READ_VERSIONS)
        return f"tape format version {found!r} is not one this codetape reads ({known})"
    return f"tape format version {found!r} is not {expected}, the version of the tape's first line"


def _first_version(line: str, where: str) -> int:
    """The version a tape's first event line declares (1 when it declares none)."""
    if '"tape"' not in line:
        return 1
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return 1  # the format 1 parser reports what is wrong with it
    if not isinstance(record, dict) or record.get("tape") is None:
        return 1
    if record["tape"] not in READ_VERSIONS or isinstance(record["tape"], bool):
        raise TapeError(f"{where}: {_version_problem(record['tape'], 1)}")
    return int(record["tape"])


Chain = tuple[int | None, str | None, str | None, str | None]
"""A line's position, hash, prev_hash and hash_format, as written."""


def _decoded(path: Path) -> Iterator[tuple[Event, Chain, str] | TapeProof]:
    """A tape's events (with their chain fields and line) and proof line, in file order."""
    from recorder.tape_line import parse_lean_line, parse_line, parse_proof_line

    lean: LeanReader | None = None
    version: int | None = None
    empty = True
    for number, line in open_tape_lines(path):
        if not line.strip():
            continue
        empty = False
        where = f"{path}:{number}"
        if _is_proof(line):
            proof = parse_proof_line(line, where).proof
            yield TapeProof(proof.checkpoint, list(proof.nodes), where)
            continue
        if version is None:
            version = _first_version(line, where)
            lean = LeanReader() if version == LEAN_VERSION else None
        if lean is not None:
            lean_record = parse_lean_line(line, where)
            event = lean.event(lean_record, where)
            yield event, _chain(lean_record), where
        else:
            record = parse_line(line, where)
            yield _to_event(record, where), _chain(record), where
    if empty:
        # Nothing codetape writes is empty (a tape holds at least a session's
        # opening), so an empty file is a failed copy or the wrong file, never
        # a recording of nothing: every reader refuses it with this line.
        raise TapeError(empty_tape(path))


def empty_tape(path: Path | str) -> str:
    """The one line every reader, import included, refuses an empty (or blank) file with."""
    return f"{path}: the file is empty"


def _chain(record: TapeLine | LeanLine) -> Chain:
    return record.position, record.hash, record.prev_hash, record.hash_format


def iter_tape(path: Path) -> Iterator[Event]:
    """Events of a tape file, lazily; raises :class:`TapeError` naming the bad line."""
    for item in _decoded(path):
        if not isinstance(item, TapeProof):
            yield item[0]


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

    def stored(self) -> StoredEvent:
        """The row as the exporting log stored it, for re-deriving its hash.

        Needs the row's position and hash; a missing seq stands as -1, which
        no stored row has, so the hash check reports the row instead of
        failing here.
        """
        ev = self.event
        if self.position is None or self.hash is None:
            raise ValueError(f"{self.where}: a tape row without its position and hash")
        return StoredEvent(
            position=self.position,
            session_id=ev.session_id,
            exchange_id=ev.exchange_id,
            seq=ev.seq if ev.seq is not None else -1,
            kind=ev.kind,
            recorded_at_ns=ev.recorded_at_ns,
            offset_ns=ev.offset_ns,
            payload=ev.payload,
            # Most rows (stream frames) have no meta: skip the encoder for them.
            meta_json=canonical_json(dict(ev.meta)) if ev.meta else "{}",
            sse_event=ev.sse_event,
            sse_type=ev.sse_type,
            sequence_number=ev.sequence_number,
            response_id=ev.response_id,
            hash_format=self.hash_format or "",
            prev_hash=self.prev_hash or "",
            hash=self.hash,
        )


@dataclass(frozen=True, slots=True)
class TapeProof:
    """A tape's ``{"proof": ...}`` line."""

    checkpoint: str
    nodes: list[str]
    where: str


def iter_tape_rows(path: Path) -> Iterator[TapeRow | TapeProof]:
    """A tape's events with their chain fields, and its proof line, in file order."""
    last: TapeRow | None = None
    for item in _decoded(path):
        if isinstance(item, TapeProof):
            yield item
            continue
        event, (position, hash_, prev, fmt), where = item
        if (
            position is not None
            and prev is None
            and last is not None
            and last.position == position - 1
        ):
            prev = last.hash
        if position is not None and fmt is None and last is not None:
            fmt = last.hash_format
        last = TapeRow(event, where, position, hash_, prev, fmt)
        yield last


def _is_proof(line: str) -> bool:
    """A proof line: an object with a ``proof`` key and no ``kind`` (whatever its spacing)."""
    if line.startswith(PROOF_PREFIX):
        return True
    if '"proof"' not in line or '"kind"' in line:
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and "proof" in record and "kind" not in record


def read_tape(path: Path) -> list[Event]:
    """All events of a tape, validated before anything is returned."""
    return list(iter_tape(path))


class OpenParts:
    """What a tape's events leave unfinished, fed one event at a time.

    This is the one rule for "cut short", used by every reader that judges a
    tape whole (import, ``verify TAPE``, ``diff``, ``serve``, replay): a
    session opened and never closed, an exchange whose request is there and
    whose end is not. A tape cut at a line boundary still parses line by
    line, so only this tells it from a complete one. Memory grows with the
    tape's sessions and exchanges, not its events.
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        """Session id -> its name (or id), for each session opened."""
        self.closed: set[str] = set()
        self.requests: dict[str, tuple[str, str]] = {}
        """Exchange id -> (session id, how to name it when it never ends)."""
        self.ended: set[str] = set()
        self._numbers: dict[str, int] = {}

    def add(self, ev: Event | StoredEvent) -> None:
        if ev.kind is EventKind.SESSION_OPEN:
            self.names[ev.session_id] = str(ev.meta.get("name") or ev.session_id)
        elif ev.kind is EventKind.SESSION_CLOSE:
            self.closed.add(ev.session_id)
        elif ev.kind is EventKind.REQUEST and ev.exchange_id is not None:
            number = self._numbers[ev.session_id] = self._numbers.get(ev.session_id, 0) + 1
            meta = ev.meta
            self.requests[ev.exchange_id] = (
                ev.session_id,
                f"exchange #{number} ({meta.get('method', '?')} {meta.get('url', '?')}) "
                "never ended",
            )
        elif ev.kind is EventKind.EXCHANGE_END and ev.exchange_id is not None:
            self.ended.add(ev.exchange_id)

    def by_session(self) -> dict[str, list[str]]:
        """Session id -> what is left open in it; empty for a complete tape."""
        found: dict[str, list[str]] = {}
        for session_id, name in self.names.items():
            if session_id not in self.closed:
                found.setdefault(session_id, []).append(f"session {name!r} is never closed")
        for exchange_id, (session_id, label) in self.requests.items():
            if exchange_id not in self.ended:
                found.setdefault(session_id, []).append(label)
        return found


def incomplete_parts(events: Iterable[Event | StoredEvent]) -> list[str]:
    """What ``events`` leave unfinished (see :class:`OpenParts`); empty for a complete tape.

    A tape cut short (at a line boundary, so every line still parses) or
    exported while its session was being recorded has parts here; importing
    or replaying it as if complete would pass a shorter recording for the whole.
    """
    parts = OpenParts()
    for ev in events:
        parts.add(ev)
    return [part for listed in parts.by_session().values() for part in listed]


def cut_short(parts: Iterable[str]) -> str:
    """``cut short: ...``, the one description of a tape cut short, naming two parts at most."""
    listed = list(parts)
    more = f" (and {len(listed) - 2} more)" if len(listed) > 2 else ""
    return f"cut short: {'; '.join(listed[:2])}{more}"


def check_whole(path: Path | str, events: Iterable[Event | StoredEvent], anyway: str) -> None:
    """Refuse a tape cut short: ``PATH is cut short: ... ANYWAY`` (``anyway``: how to go on)."""
    parts = incomplete_parts(events)
    if parts:
        raise TapeError(f"{path} is {cut_short(parts)}. {anyway}")


if TYPE_CHECKING:
    from _typeshed import SupportsWrite

LastLine = Callable[[], str | None]


def _tape_lines(
    events: Iterable[Event | StoredEvent], hashes: bool, last_line: LastLine | None, version: int
) -> Iterator[tuple[str, bool]]:
    """Each tape line with its newline, and whether it is an event (not the proof)."""
    if version not in READ_VERSIONS:
        raise TapeError(f"cannot write tape format version {version!r}")
    to_line = LeanWriter().line if version == LEAN_VERSION else event_to_line
    last_position: int | None = None
    last_format: str | None = None
    wrote = False
    for ev in events:
        wrote = True
        chain: dict[str, Any] | None = None
        if hashes and isinstance(ev, StoredEvent):
            chain = {"position": ev.position}
            if last_position != ev.position - 1:
                chain["prev_hash"] = ev.prev_hash
            chain["hash"] = ev.hash
            if ev.hash_format != last_format:
                chain["hash_format"] = ev.hash_format
            last_position, last_format = ev.position, ev.hash_format
        yield to_line(ev, chain) + "\n", True
    if not wrote:
        # Every reader refuses an empty file (see empty_tape): never write one.
        raise TapeError("no events to write: a tape holds at least one")
    extra = last_line() if last_line is not None else None
    if extra is not None:
        yield extra + "\n", False


def write_tape_to(
    events: Iterable[Event | StoredEvent],
    out: SupportsWrite[str],
    *,
    hashes: bool = False,
    last_line: LastLine | None = None,
    version: int = TAPE_VERSION,
) -> int:
    """Write ``events`` as tape lines to an open text stream; return the number of event lines."""
    count = 0
    for line, is_event in _tape_lines(events, hashes, last_line, version):
        out.write(line)
        count += is_event
    return count


def write_tape(
    events: Iterable[Event | StoredEvent],
    path: Path,
    *,
    hashes: bool = False,
    last_line: LastLine | None = None,
    version: int = TAPE_VERSION,
) -> int:
    """Write ``events`` as a tape at ``path`` atomically; return the number of event lines.

    A ``path`` whose name ends in ``.zst`` gets the tape zstd-compressed, as a
    stream (memory stays bounded). ``version`` 1 writes the older format.

    No events is a :class:`TapeError` (a tape holds at least one; readers refuse
    an empty file). ``hashes`` adds each stored event's chain fields; ``last_line``, called
    after the events are written, may give one more line (a proof) to end with.
    Only onto a new path or over a regular file (through a symlink, the file
    it points to); a directory, device, pipe or socket is refused with a
    :class:`TapeError` before anything is written. A new file gets the
    permissions the umask gives; a replaced file keeps its own.
    """
    with atomic_tape(Path(path)) as out:
        return write_tape_to(events, out, hashes=hashes, last_line=last_line, version=version)

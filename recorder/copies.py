"""Recognising copies: is a session about to be imported already in the log?

Guarantees: :func:`find_copies` compares what each new session recorded
(requests, response heads and body or SSE payloads, in exchange order; ids,
times and endings left out, as an import synthesises those) with the stored
sessions that could be the same recording: the one with the same id, and,
for recordings imported from other tools (whose ids derive from the file's
bytes, so a cut copy gets other ids), those with the same name and source.
It answers, per new session, whether the stored one is the ``same``, a
``shorter`` copy (the new file is a longer version of what was imported
partially), a ``longer`` one (the new file is a cut copy), or ``different``.
Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from recorder.events import Event, EventKind, StoredEvent
from recorder.store.store import EventStore, SessionInfo

__all__ = ["Copy", "Relation", "find_copies", "origin", "relation"]

Relation = Literal["same", "shorter", "longer", "different"]
"""How the stored session relates to the new one: ``shorter`` = stored is a prefix."""

Item = tuple[int, int, str, str, bytes]


@dataclass(frozen=True, slots=True)
class Copy:
    """A stored session that is (a version of) the new session ``new_id``."""

    new_id: str
    new_name: str
    stored: SessionInfo
    relation: Relation
    stored_items: int
    new_items: int


def _key_meta(ev: Event | StoredEvent) -> str:
    if ev.kind is EventKind.REQUEST:
        meta = ev.meta
        return f"{meta.get('method')} {meta.get('url')}"
    if ev.kind is EventKind.RESPONSE_HEAD:
        return str(ev.meta.get("status"))
    return ""


def content(events: Iterable[Event | StoredEvent]) -> list[Item]:
    """What a session recorded, in exchange order, without ids, times or endings."""
    index: dict[str, int] = {}
    items: list[Item] = []
    for ev in events:
        if ev.exchange_id is None or ev.kind is EventKind.EXCHANGE_END:
            continue
        number = index.setdefault(ev.exchange_id, len(index))
        items.append((number, ev.seq or 0, ev.kind.value, _key_meta(ev), ev.payload))
    items.sort(key=lambda item: (item[0], item[1]))
    return items


def _is_prefix(a: Sequence[Item], b: Sequence[Item]) -> bool:
    """``a`` is ``b`` cut short; its last item may itself be cut inside its payload."""
    if len(a) > len(b):
        return False
    if not a:
        return True
    if list(a[:-1]) != list(b[: len(a) - 1]):
        return False
    last, other = a[-1], b[len(a) - 1]
    return last == other or (last[:4] == other[:4] and other[4].startswith(last[4]))


def relation(stored: Sequence[Item], new: Sequence[Item]) -> Relation:
    """``same``, ``shorter``/``longer`` (the stored one is a prefix / has one) or ``different``."""
    if list(stored) == list(new):
        return "same"
    if _is_prefix(stored, new):
        return "shorter"
    if _is_prefix(new, stored):
        return "longer"
    return "different"


def origin(source: Any) -> tuple[str, str] | None:
    if not isinstance(source, dict) or not source.get("format") or not source.get("path"):
        return None
    return str(source["format"]), str(source["path"])


def find_copies(store: EventStore, events: Sequence[Event]) -> list[Copy]:
    """Each stored session that is a version of one of the sessions opened in ``events``.

    A stored session with another id and ``different`` content is not listed:
    recordings may share a name.
    """
    opens = [ev for ev in events if ev.kind is EventKind.SESSION_OPEN]
    if not opens:
        return []
    stored = store.sessions()
    by_id = {s.id: s for s in stored}
    by_origin: dict[tuple[str, str, str], list[SessionInfo]] = {}
    for s in stored:
        where = origin(s.source)
        if where is not None:
            by_origin.setdefault((s.name, *where), []).append(s)
    found: list[Copy] = []
    new_content: dict[str, list[Item]] = {}
    for ev in opens:
        name = str(ev.meta.get("name", ""))
        candidates: list[SessionInfo] = []
        if ev.session_id in by_id:
            candidates.append(by_id[ev.session_id])
        where = origin(ev.meta.get("source"))
        if where is not None:
            candidates += [s for s in by_origin.get((name, *where), []) if s.id != ev.session_id]
        for candidate in candidates:
            if ev.session_id not in new_content:
                new_content[ev.session_id] = content(
                    e for e in events if e.session_id == ev.session_id
                )
            mine = new_content[ev.session_id]
            theirs = content(store.session_events(candidate.id))
            found_relation = relation(theirs, mine)
            if found_relation == "different" and candidate.id != ev.session_id:
                continue
            found.append(
                Copy(ev.session_id, name, candidate, found_relation, len(theirs), len(mine))
            )
    return found

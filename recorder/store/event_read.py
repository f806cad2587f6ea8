"""Reading the event log: lean rows back as the events appended.

Guarantees:

* **Same events.** Every read gives back the event exactly as appended, with
  its hex hash and its predecessor's, whatever the storage (keys become
  public values through a cache of the key tables, payloads are decoded by
  :mod:`recorder.store.codec`).
* **Streaming reads.** Readers page through by position (keyset pagination),
  so no read loads the whole table.
* **Damage named.** A payload that does not decode raises
  :class:`~recorder.errors.StoreError` naming its position, unless the
  caller collects damage (see :func:`paged`): then it reads as empty.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from recorder.errors import AmbiguousSession, StoreError, UnknownSession
from recorder.events import EventKind, StoredEvent
from recorder.store.codec import decode
from recorder.store.engine import describe_url, translate_errors
from recorder.store.hashing import GENESIS
from recorder.store.listing import SessionInfo
from recorder.store.schema import KEY_TABLES

__all__ = [
    "PAGE",
    "ExchangeInfo",
    "exchange_events",
    "exchanges_of",
    "find_session",
    "hashes",
    "paged",
]

# What readers get: the lean row as stored, filtered on its own keys so that
# its indexes serve the read. Keys become public values through the cache of
# the key tables (see _public), hashes arrive as bytes and the predecessor's
# is the previous row's (see _events): no join per row.
_SELECT = (
    "SELECT e.position, e.session_key, e.exchange_key, e.seq, e.kind_key, e.recorded_at_ns, "
    "e.offset_ns, e.sse_event_key, e.sse_type_key, e.sequence_number, e.response_key, "
    "e.item_key, e.meta, e.codec, e.payload, e.hash_format_key, e.hash FROM events e"
)
# Row columns that hold a key, and the table it is a key of.
_KEY_COLUMNS = (
    (1, "sessions"),
    (2, "exchanges"),
    (4, "names"),
    (7, "names"),
    (8, "names"),
    (10, "responses"),
    (11, "items"),
    (15, "names"),
)
_HASHES_AT = sa.text("SELECT position, hash FROM events WHERE position IN :p").bindparams(
    sa.bindparam("p", expanding=True)
)
PAGE = 2000


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    """One exchange: its request line, response status and ending."""

    id: str
    session_id: str
    method: str
    url: str
    status: int | None
    outcome: str | None
    reason: str | None
    events: int
    sse_events: int
    first_position: int


def _row_to_event(
    row: Sequence[Any], prev_hash: str, damage: dict[int, str] | None = None
) -> StoredEvent:
    try:
        payload = decode(row[13], row[14], row[7], row[11])
    except StoreError as exc:
        if damage is None:
            # Say which row: a payload that does not decode is damage at a position.
            raise type(exc)(f"the event at position {row[0]}: {exc}") from exc
        # A verifying reader notes it and goes on: the row's stored hash still
        # links the chain, so the rest of the log is checked as usual.
        damage[row[0]] = f"the payload does not decode: {exc}"
        payload = b""
    return StoredEvent(
        position=row[0],
        session_id=row[1],
        exchange_id=row[2],
        seq=row[3],
        kind=EventKind(row[4]),
        recorded_at_ns=row[5],
        offset_ns=row[6],
        sse_event=row[7],
        sse_type=row[8],
        sequence_number=row[9],
        response_id=row[10],
        meta_json=row[12] or "{}",
        payload=payload,
        hash_format=row[15] or "",
        prev_hash=prev_hash,
        hash=bytes(row[16]).hex(),
    )


def _public(conn: sa.Connection, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """``rows`` with each key replaced by its public value (keys never change: cached)."""
    caches = _caches(conn)
    missing: dict[str, set[int]] = {}
    for row in rows:
        for column, table in _KEY_COLUMNS:
            key = row[column]
            if key is not None and key not in caches[table]:
                missing.setdefault(table, set()).add(key)
    for table, keys in missing.items():
        wanted = sorted(keys)
        query = sa.text(f"SELECT id, public_id FROM {table} WHERE id IN :k").bindparams(
            sa.bindparam("k", expanding=True)
        )
        for start in range(0, len(wanted), 500):
            caches[table].update(conn.execute(query, {"k": wanted[start : start + 500]}).all())
    result = []
    for row in rows:
        out = list(row)
        for column, table in _KEY_COLUMNS:
            key = out[column]
            if key is not None:
                # A key with no row (the table was tampered with) reads as NULL.
                out[column] = caches[table].get(key)
        result.append(out)
    return result


def _caches(conn: sa.Connection) -> dict[str, dict[int, str]]:
    """Key -> public value of each key table, kept on the driver connection (one database)."""
    found: dict[str, dict[int, str]] | None = conn.info.get("codetape_keys")
    if found is None:
        found = conn.info["codetape_keys"] = {t: {} for t in KEY_TABLES}
    return found


def _events(
    conn: sa.Connection,
    rows: Sequence[Sequence[Any]],
    last: int = -1,
    last_hash: str = "",
    damage: dict[int, str] | None = None,
) -> list[StoredEvent]:
    """``rows`` as events, each with its predecessor's hash: that of the row before
    it in ``rows`` when that is the previous position (``last``, ``last_hash``: the
    row before the first), else read from the table ("" when that row is missing)."""
    rows = _public(conn, rows)
    gaps = []
    previous = last
    for row in rows:
        if row[0] != previous + 1 and row[0] > 1:
            gaps.append(row[0] - 1)
        previous = row[0]
    found: dict[int, str] = {}
    for start in range(0, len(gaps), 500):
        found.update(
            (int(position), bytes(digest).hex())
            for position, digest in conn.execute(_HASHES_AT, {"p": gaps[start : start + 500]})
        )
    result = []
    previous, prev = last, last_hash
    for row in rows:
        position = row[0]
        if position == 1:
            link = GENESIS
        elif position == previous + 1:
            link = prev
        else:
            link = found.get(position - 1, "")
        event = _row_to_event(row, link, damage)
        result.append(event)
        previous, prev = position, event.hash
    return result


def _describe_session(s: SessionInfo) -> str:
    opened = dt.datetime.fromtimestamp(s.opened_at_ns // 1_000_000_000, dt.UTC)
    return f"{s.name!r}, opened {opened:%Y-%m-%d %H:%M:%S} UTC, {s.exchanges} exchange(s)" + (
        "" if s.closed else ", still open"
    )


def paged(
    engine: Engine,
    url: str,
    where: str,
    params: dict[str, Any],
    page: int = PAGE,
    damage: dict[int, str] | None = None,
) -> Iterator[StoredEvent]:
    """The events matching ``where`` past ``params["after"]``, ``page`` rows per read.

    Each page is read on a connection of its own, returned before the events
    are yielded. With ``damage``, a payload that does not decode is noted
    there (position -> what is wrong) and its event comes with an empty one.
    """
    after = params.pop("after", 0)
    query = sa.text(f"{_SELECT} WHERE e.position > :after{where} ORDER BY e.position LIMIT :limit")
    last, last_hash = -1, ""
    while True:
        with translate_errors(url), engine.connect() as conn:
            rows = conn.execute(query, {**params, "after": after, "limit": page}).all()
            events = _events(conn, rows, last, last_hash, damage)
        yield from events
        if len(rows) < page:
            return
        last, last_hash = events[-1].position, events[-1].hash
        after = last


def exchange_events(engine: Engine, url: str, exchange_id: str) -> list[StoredEvent]:
    """The events of one exchange, in seq order."""
    query = sa.text(
        f"{_SELECT} WHERE e.exchange_key IS NOT NULL "
        "AND e.exchange_key = (SELECT id FROM exchanges WHERE public_id = :x) ORDER BY e.seq"
    )
    with translate_errors(url), engine.connect() as conn:
        return _events(conn, conn.execute(query, {"x": exchange_id}).all())


def exchanges_of(session_id: str, events: Iterable[StoredEvent]) -> list[ExchangeInfo]:
    """The exchanges of the session whose events are ``events``, in the order of their first."""
    info: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.exchange_id is None:
            continue
        entry = info.setdefault(
            ev.exchange_id,
            {
                "method": "",
                "url": "",
                "status": None,
                "outcome": None,
                "reason": None,
                "events": 0,
                "sse": 0,
                "first": ev.position,
            },
        )
        entry["events"] += 1
        if ev.kind is EventKind.REQUEST:
            meta = ev.meta
            entry["method"], entry["url"] = meta.get("method", ""), meta.get("url", "")
        elif ev.kind is EventKind.RESPONSE_HEAD:
            entry["status"] = ev.meta.get("status")
        elif ev.kind is EventKind.SSE:
            entry["sse"] += 1
        elif ev.kind is EventKind.EXCHANGE_END:
            meta = ev.meta
            entry["outcome"], entry["reason"] = meta.get("outcome"), meta.get("reason")
    return [
        ExchangeInfo(
            id=xid,
            session_id=session_id,
            method=e["method"],
            url=e["url"],
            status=e["status"],
            outcome=e["outcome"],
            reason=e["reason"],
            events=e["events"],
            sse_events=e["sse"],
            first_position=e["first"],
        )
        for xid, e in info.items()
    ]


def find_session(sessions: list[SessionInfo], ref: str, url: str) -> SessionInfo:
    """The session with id ``ref``, else the one named ``ref``, else a unique id prefix.

    Raises :class:`AmbiguousSession` (listing the candidates) when several
    sessions carry the name, or the prefix, rather than guessing, and
    :class:`UnknownSession` (naming the store at ``url``) when none matches.
    """
    for s in sessions:
        if s.id == ref:
            return s
    named = [s for s in sessions if s.name == ref]
    if len(named) == 1:
        return named[0]
    if named:
        raise AmbiguousSession(
            f"{len(named)} sessions are named {ref!r}: give one's id instead",
            [(s.id, _describe_session(s)) for s in named],
        )
    if len(ref) >= 6:
        prefixed = [s for s in sessions if s.id.startswith(ref)]
        if len(prefixed) == 1:
            return prefixed[0]
        if len(prefixed) > 1:
            raise AmbiguousSession(
                f"{len(prefixed)} session ids start with {ref!r}: give more of the id",
                [(s.id, _describe_session(s)) for s in prefixed],
            )
    raise UnknownSession(
        f"no session named or with id {ref!r} in {describe_url(url)} (see `codetape sessions`)"
    )


def hashes(engine: Engine, url: str, until: int, page: int) -> Iterator[tuple[int, str]]:
    """(position, hash) of each row up to ``until``, in order, ``page`` rows per read."""
    query = sa.text(
        "SELECT position, hash FROM events WHERE position > :after AND position <= :until "
        "ORDER BY position LIMIT :limit"
    )
    after = 0
    while after < until:
        with translate_errors(url), engine.connect() as conn:
            rows = conn.execute(query, {"after": after, "until": until, "limit": page}).all()
        for position, digest in rows:
            yield int(position), bytes(digest).hex()
        if len(rows) < page:
            return
        after = rows[-1][0]

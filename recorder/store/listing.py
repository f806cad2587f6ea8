"""The session list: the queries that find it and the records made of their rows.

Guarantees: :func:`sessions_from` gives every session, in log order, as a
:class:`SessionInfo`, from the rows of :data:`SESSION_QUERIES` run in one
read transaction by whatever runs SQL (SQLAlchemy in
:meth:`recorder.store.EventStore.sessions`, the bare DB-API driver in
:mod:`recorder.store.plain_read`): the same SQL and the same assembly, so
both give the same list. The queries take no parameters and are plain SQL
that SQLite and PostgreSQL both run. This module imports no database library.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SESSION_QUERIES", "Rows", "SessionInfo", "sessions_from"]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as the log knows it."""

    id: str
    name: str
    labels: dict[str, str]
    metadata: dict[str, Any]
    source: dict[str, Any] | None
    opened_at_ns: int
    open_position: int
    closed: bool
    exchanges: int


# Opens and closes are session-level events (no exchange): found through
# that small partial index, not by a scan of the log.
_OPENS = (
    "SELECT e.position, s.public_id, e.recorded_at_ns, coalesce(e.meta, '{}') "
    "FROM events e JOIN names k ON k.id = e.kind_key "
    "JOIN sessions s ON s.id = e.session_key "
    "WHERE e.exchange_key IS NULL AND k.public_id = 'session_open' "
    "ORDER BY e.position"
)
_CLOSED = (
    "SELECT DISTINCT s.public_id FROM events e "
    "JOIN names k ON k.id = e.kind_key JOIN sessions s ON s.id = e.session_key "
    "WHERE e.exchange_key IS NULL AND k.public_id = 'session_close'"
)
# An exchange belongs to the session of its first event, found with one probe
# of the stream index: a key committed by an append that then failed (see
# recorder.store.keys) has no event, and counts nowhere.
_COUNTS = (
    "SELECT s.public_id, count(*) FROM exchanges x JOIN sessions s "
    "ON s.id = (SELECT e.session_key FROM events e "
    "WHERE e.exchange_key = x.id AND e.exchange_key IS NOT NULL "
    "ORDER BY e.seq LIMIT 1) GROUP BY s.public_id"
)
SESSION_QUERIES = (_OPENS, _CLOSED, _COUNTS)
"""Run in this order, in one transaction; their rows go to :func:`sessions_from`."""

Rows = Sequence[Sequence[Any]]


def sessions_from(run: Callable[[str], Rows]) -> list[SessionInfo]:
    """Every session, in log order; ``run(sql)`` runs each of :data:`SESSION_QUERIES`."""
    opens, closed_rows, count_rows = (run(sql) for sql in SESSION_QUERIES)
    closed = {row[0] for row in closed_rows}
    counts: dict[str, int] = {row[0]: int(row[1]) for row in count_rows}
    result = []
    for position, sid, at_ns, meta_json in opens:
        meta_d: dict[str, Any] = json.loads(meta_json)
        result.append(
            SessionInfo(
                id=sid,
                name=str(meta_d.get("name", "")),
                labels=dict(meta_d.get("labels") or {}),
                metadata=dict(meta_d.get("metadata") or {}),
                source=meta_d.get("source"),
                opened_at_ns=at_ns,
                open_position=position,
                closed=sid in closed,
                exchanges=counts.get(sid, 0),
            )
        )
    return result

"""Closing what a dead recorder left open, by appending only.

A recording process that dies (SIGKILL, power loss) leaves its session without
``session_close`` and its in-flight exchanges without ``exchange_end``;
``verify`` reports those exchanges as open. Repair appends, for each such
session whose recorder is known to be gone, an ``exchange_end`` with outcome
``interrupted`` for every open exchange and then a ``session_close``.

Guarantees:

* Append-only: nothing in the log is changed or removed; repairs are ordinary
  events (the lease row a repair deletes is bookkeeping beside the log).
* Never closes a live recording, on any host, in any container: a session
  recorded with a lease (``session_open`` carries ``meta["lease"]``, see
  :mod:`recorder.lease`) is repaired only once its lease has expired on the
  database's clock, i.e. its recorder has not renewed it for the lease's
  duration (30 s by default): it is dead, or stopped or cut off for that long,
  and if it ever resumes it notices and records what follows in a
  continuation session instead of the closed one. Sessions recorded before
  leases existed keep the older rule: repaired only when their recorder (host,
  boot id, pid and process start time in the ``session_open``) is on this
  host and provably gone. ``force=True`` closes every open session, live or
  not: only when no recorder is running.
* Atomic and safe to run concurrently: the check (session still open, lease
  still expired) and the repair's events happen in one append, under the
  log's write lock, which deletes the lease in the same transaction; a
  recorder renewing at that moment either renews first (and the session is
  left alone) or finds its lease gone.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from recorder.errors import StoreError
from recorder.events import Event, EventKind, Outcome, now_ns
from recorder.lease import LeaseRow, now_sql, read_leases, take_expired
from recorder.store.engine import translate_errors
from recorder.store.store import Committed, EventStore

__all__ = [
    "Liveness",
    "RepairReport",
    "liveness",
    "open_exchange_liveness",
    "process_state",
    "repair",
    "repair_dead_writers",
    "writer_identity",
]

ProcessState = Literal["alive", "dead", "unknown"]


@functools.cache
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of ``pid`` from /proc, if readable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields follow the last ")".
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def writer_identity() -> dict[str, Any]:
    """Who is recording: enough to tell later whether this process is still alive."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid": pid,
        "start_ticks": stat[1] if stat else None,
    }


def process_state(identity: dict[str, Any]) -> ProcessState:
    """Whether the recorder described by ``identity`` is alive, dead, or unknowable from here.

    A recorder with a writer process (``identity["writer"]``) is dead only
    when that process is gone too: it stores what it received after the
    recorder died, and a repair must not race it.
    """
    state = _one_process_state(identity)
    writer = identity.get("writer")
    if state == "dead" and isinstance(writer, dict):
        return _one_process_state({**identity, **writer})
    return state


def _one_process_state(identity: dict[str, Any]) -> ProcessState:
    if identity.get("host") != socket.gethostname():
        return "unknown"
    boot = _boot_id()
    if boot is not None and identity.get("boot_id") not in (None, boot):
        return "dead"  # the machine rebooted since
    pid = identity.get("pid")
    if not isinstance(pid, int):
        return "unknown"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass  # it exists, under another user
    stat = _proc_stat(pid)
    if stat is None:
        return "alive" if _boot_id() is None else "dead"
    state, start = stat
    if state in ("Z", "X"):
        return "dead"  # killed, not yet reaped by its parent
    expected = identity.get("start_ticks")
    if isinstance(expected, int) and expected != start:
        return "dead"  # the pid was reused by another process
    return "alive"


@dataclass(frozen=True, slots=True)
class Liveness:
    """Whether an open session's recorder may still be writing it, as far as can be told."""

    session_id: str
    lease: Literal["live", "expired"] | None
    """For a session recorded with a lease; None for one recorded before leases."""
    process: ProcessState | None
    """For a session recorded before leases: its recorder process, judged from this host."""
    expires_in_s: float | None
    """Seconds until its lease expires (negative: since it expired); None without a row."""
    recorder: dict[str, Any] | None

    @property
    def repairable(self) -> bool:
        """True when a repair may close the session without ``force``."""
        if self.lease is not None:
            return self.lease == "expired"
        return self.process == "dead"

    def describe(self) -> str:
        """One line for people: why the session may or may not be repaired."""
        if self.lease == "live":
            return f"lease live (expires in {self.expires_in_s:.0f} s unless renewed)"
        if self.lease == "expired":
            if self.expires_in_s is None:
                return "lease gone (its row was removed): `codetape repair` closes it"
            return f"lease expired {-self.expires_in_s:.0f} s ago: `codetape repair` closes it"
        if self.process == "alive":
            return "no lease (recorded before leases); its recorder process is running"
        if self.process == "dead":
            return "no lease (recorded before leases); its recorder process is gone"
        return "no lease (recorded before leases); its recorder cannot be checked from here"


@dataclass(slots=True)
class RepairReport:
    """What a repair did and what it left alone."""

    sessions_closed: list[str] = field(default_factory=list)
    exchanges_interrupted: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(session id, why) of open sessions left as they are."""


# Opens and closes are session-level events: the lean table's partial index
# on them finds them without a scan of the log (this runs at every start).
_UNCLOSED = sa.text(
    "SELECT s.public_id, coalesce(o.meta, '{}') FROM events o "
    "JOIN sessions s ON s.id = o.session_key JOIN names k ON k.id = o.kind_key "
    "WHERE o.exchange_key IS NULL AND k.public_id = 'session_open' "
    "AND NOT EXISTS (SELECT 1 FROM events c JOIN names ck ON ck.id = c.kind_key "
    "WHERE c.session_key = o.session_key AND c.exchange_key IS NULL "
    "AND ck.public_id = 'session_close') ORDER BY o.position"
)
_CLOSED = sa.text(
    "SELECT 1 FROM event_rows WHERE kind = 'session_close' AND session_id = :s LIMIT 1"
)
_OPEN_EXCHANGES = sa.text(
    "SELECT r.exchange_id, "
    "(SELECT max(x.seq) FROM event_rows x WHERE x.exchange_id = r.exchange_id) "
    "FROM event_rows r WHERE r.session_id = :s AND r.kind = 'request' "
    "AND NOT EXISTS (SELECT 1 FROM event_rows e WHERE e.exchange_id = r.exchange_id "
    "AND e.kind = 'exchange_end') ORDER BY r.position"
)
_SESSION_SEQ = sa.text(
    "SELECT max(seq) FROM event_rows WHERE session_id = :s AND exchange_id IS NULL"
)
_EXCHANGE_SESSIONS = sa.text(
    "SELECT exchange_id, session_id FROM event_rows WHERE kind = 'request' AND exchange_id IN :ids"
).bindparams(sa.bindparam("ids", expanding=True))

_WHY = {
    "lease": "its recorder stopped renewing its lease (it died, or was stopped or cut off "
    "from the database for longer than the lease) before the exchange ended",
    "dead": "the recording process died before the exchange ended",
    "force": "closed by a forced repair",
}


def _unclosed_sessions(store: EventStore) -> list[tuple[str, dict[str, Any]]]:
    with translate_errors(store.url), store.engine.connect() as conn:
        rows = conn.execute(_UNCLOSED).all()
    return [(sid, json.loads(meta)) for sid, meta in rows]


def _identity(meta: dict[str, Any]) -> dict[str, Any] | None:
    identity = (meta.get("metadata") or {}).get("recorder")
    return identity if isinstance(identity, dict) else None


def _judge(session_id: str, meta: dict[str, Any], lease_rows: dict[str, LeaseRow]) -> Liveness:
    identity = _identity(meta)
    if isinstance(meta.get("lease"), dict):
        row = lease_rows.get(session_id)
        # No row for a session recorded with a lease: it was given up (or the
        # repair that deleted it did not get to close the session): expired.
        state: Literal["live", "expired"] = "live" if row is not None and row.live else "expired"
        return Liveness(
            session_id, state, None, None if row is None else row.expires_in_s, identity
        )
    process: ProcessState = "unknown" if identity is None else process_state(identity)
    return Liveness(session_id, None, process, None, identity)


def liveness(store: EventStore, session_ids: list[str] | None = None) -> dict[str, Liveness]:
    """Every open session (or those of ``session_ids`` that are open), judged as repair would."""
    unclosed = [
        (sid, meta)
        for sid, meta in _unclosed_sessions(store)
        if session_ids is None or sid in session_ids
    ]
    rows = read_leases(
        store, [sid for sid, meta in unclosed if isinstance(meta.get("lease"), dict)]
    )
    return {sid: _judge(sid, meta, rows) for sid, meta in unclosed}


def open_exchange_liveness(
    store: EventStore, exchange_ids: list[str]
) -> list[tuple[str, str | None, Liveness | None]]:
    """(exchange, its session, that session's liveness) for exchanges left open.

    The liveness is None when the session itself is closed.
    """
    if not exchange_ids:
        return []
    with translate_errors(store.url), store.engine.connect() as conn:
        found = conn.execute(_EXCHANGE_SESSIONS, {"ids": exchange_ids}).all()
    sessions: dict[str, str] = {str(x): str(s) for x, s in found}
    states = liveness(store, sorted(set(sessions.values())))
    result: list[tuple[str, str | None, Liveness | None]] = []
    for xid in exchange_ids:
        sid = sessions.get(xid)
        result.append((xid, sid, None if sid is None else states.get(sid)))
    return result


def _session_batch(
    conn: sa.Connection, session_id: str, why: str, details: dict[str, Any]
) -> tuple[list[Event], list[str]]:
    open_exchanges = conn.execute(_OPEN_EXCHANGES, {"s": session_id}).all()
    session_seq = conn.execute(_SESSION_SEQ, {"s": session_id}).scalar()
    at = now_ns()
    batch = [
        Event(
            session_id,
            EventKind.EXCHANGE_END,
            int(max_seq) + 1,
            exchange_id,
            recorded_at_ns=at,
            meta={"outcome": Outcome.INTERRUPTED.value, "reason": why, **details},
        )
        for exchange_id, max_seq in open_exchanges
    ]
    batch.append(
        Event(
            session_id,
            EventKind.SESSION_CLOSE,
            int(session_seq or 0) + 1,
            recorded_at_ns=at,
            meta={"reason": why, **details},
        )
    )
    return batch, [str(x) for x, _ in open_exchanges]


def _close(store: EventStore, state: Liveness, *, force: bool) -> tuple[list[str] | None, str]:
    """Close one session in one append, re-checking under the write lock; (exchanges, why)."""
    session_id = state.session_id
    outcome: dict[str, Any] = {"skipped": "repaired concurrently by another process"}

    def prepare(
        conn: sa.Connection, _batch: list[Event], _head: int
    ) -> tuple[list[Event], Committed | None]:
        if conn.execute(_CLOSED, {"s": session_id}).first() is not None:
            return [], None
        details: dict[str, Any] = {"repaired": True}
        if state.recorder is not None:
            details["recorder"] = state.recorder
        # Without force the lease must still be expired now that the lock is
        # held; with force it is taken whatever its state (a legacy session
        # has none).
        taken, row = take_expired(conn, session_id, force=force)
        if taken == "live" and state.lease is not None:
            outcome["skipped"] = "its lease was renewed just now: its recorder is running"
            return [], None
        if row is not None:
            details["lease"] = {
                "holder": row.holder,
                "expired_s_ago": round(-row.expires_in_s, 3),
            }
        if force and not state.repairable:
            why = _WHY["force"]
        else:
            why = _WHY["lease" if state.lease is not None else "dead"]
        batch, exchanges = _session_batch(conn, session_id, why, details)
        outcome["exchanges"] = exchanges
        return batch, None

    try:
        store.append([], prepare=prepare)
    except StoreError as exc:
        return None, f"could not be repaired: {exc}"
    if "exchanges" not in outcome:
        return None, str(outcome["skipped"])
    exchanges: list[str] = outcome["exchanges"]
    return exchanges, ""


def _sweep(store: EventStore) -> None:
    """Drop expired lease rows of sessions that are closed (a release that never happened)."""
    now = now_sql(store.backend)
    # EXISTS, not IN: one index probe per (rare) lease row, never a scan of
    # every closed session in the log; this runs whenever a recorder starts.
    stale = (
        f"FROM leases WHERE expires_at_ns <= {now} AND EXISTS (SELECT 1 FROM event_rows e "
        "WHERE e.kind = 'session_close' AND e.session_id = leases.session_id)"
    )
    try:
        with translate_errors(store.url), store.engine.connect() as conn:
            if conn.execute(sa.text(f"SELECT 1 {stale} LIMIT 1")).first() is None:
                return
        write = store.engine.connect().execution_options(sqlite_begin="IMMEDIATE")
        with translate_errors(store.url), write as conn, conn.begin():
            conn.execute(sa.text(f"DELETE {stale}"))
    except StoreError:
        pass  # bookkeeping only: the next repair tries again


def repair(
    store: EventStore, *, force: bool = False, session_ids: list[str] | None = None
) -> RepairReport:
    """Close the open sessions (and their open exchanges) whose recorder is gone.

    A session recorded with a lease is closed once its lease has expired; one
    recorded before leases once its recorder is provably dead on this host.
    ``force`` closes every open session whatever its state (use it only when
    no recorder is running). ``session_ids`` limits the repair to those.
    """
    report = RepairReport()
    for session_id, state in liveness(store, session_ids).items():
        if not state.repairable and not force:
            report.skipped.append((session_id, _not_yet(state)))
            continue
        exchanges, why = _close(store, state, force=force)
        if exchanges is None:
            report.skipped.append((session_id, why))
            continue
        report.sessions_closed.append(session_id)
        report.exchanges_interrupted.extend(exchanges)
    _sweep(store)
    return report


def _not_yet(state: Liveness) -> str:
    if state.lease == "live":
        return (
            f"its recorder holds a live lease (renewed within the lease; it expires in "
            f"{state.expires_in_s:.0f} s unless renewed)"
        )
    if state.process == "alive":
        return "its recorder is still running"
    return "its recorder cannot be checked from this host (use force)"


def repair_dead_writers(store: EventStore) -> RepairReport:
    """What every new recorder runs first: close the sessions whose recorder is gone."""
    return repair(store)

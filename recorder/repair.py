"""Closing what a dead recorder left open, by appending only.

A recording process that dies (SIGKILL, power loss) leaves its session without
``session_close`` and its in-flight exchanges without ``exchange_end``;
``verify`` reports those exchanges as open. Repair appends, for each such
session whose recorder is known to be dead, an ``exchange_end`` with outcome
``interrupted`` for every open exchange and then a ``session_close``.

Guarantees:

* Append-only: nothing is changed or removed; repairs are ordinary events.
* Never closes a live recording: a session is repaired only when its recorder
  (the ``recorder`` identity every capture puts in its ``session_open``
  metadata: host, boot id, pid and the process's start time) is on this host
  and provably gone. Sessions of other hosts are left alone unless
  ``force=True``, which the user may pass when no recorder is running.
* Safe to run concurrently: a repair names the exact ``seq`` it writes, so two
  repairers racing on one session cannot both succeed (the store's unique
  ``(stream, seq)`` index refuses the second atomic batch).
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
from recorder.store.engine import translate_errors
from recorder.store.store import EventStore

__all__ = ["RepairReport", "process_state", "repair", "repair_dead_writers", "writer_identity"]

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


@dataclass(slots=True)
class RepairReport:
    """What a repair did and what it left alone."""

    sessions_closed: list[str] = field(default_factory=list)
    exchanges_interrupted: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(session id, why) of open sessions left as they are."""


_UNCLOSED = sa.text(
    "SELECT o.session_id, o.meta FROM events o WHERE o.kind = 'session_open' "
    "AND NOT EXISTS (SELECT 1 FROM events c WHERE c.kind = 'session_close' "
    "AND c.session_id = o.session_id) ORDER BY o.position"
)
_OPEN_EXCHANGES = sa.text(
    "SELECT r.exchange_id, (SELECT max(x.seq) FROM events x WHERE x.exchange_id = r.exchange_id) "
    "FROM events r WHERE r.session_id = :s AND r.kind = 'request' "
    "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.exchange_id = r.exchange_id "
    "AND e.kind = 'exchange_end') ORDER BY r.position"
)
_SESSION_SEQ = sa.text("SELECT max(seq) FROM events WHERE session_id = :s AND exchange_id IS NULL")


def _unclosed_sessions(store: EventStore) -> list[tuple[str, dict[str, Any]]]:
    with translate_errors(store.url), store.engine.connect() as conn:
        rows = conn.execute(_UNCLOSED).all()
    return [(sid, json.loads(meta)) for sid, meta in rows]


def _session_batch(
    store: EventStore, session_id: str, why: str, identity: dict[str, Any] | None
) -> tuple[list[Event], list[str]]:
    with translate_errors(store.url), store.engine.connect() as conn:
        open_exchanges = conn.execute(_OPEN_EXCHANGES, {"s": session_id}).all()
        session_seq = conn.execute(_SESSION_SEQ, {"s": session_id}).scalar()
    at = now_ns()
    details: dict[str, Any] = {"repaired": True}
    if identity is not None:
        details["recorder"] = identity
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


def repair(
    store: EventStore, *, force: bool = False, session_ids: list[str] | None = None
) -> RepairReport:
    """Close the sessions (and their open exchanges) whose recorder is dead.

    ``force`` also closes sessions whose recorder cannot be checked from here
    (another host, or no recorder identity) and even live ones: use it only
    when no recorder is running. ``session_ids`` limits the repair to those.
    """
    report = RepairReport()
    for session_id, meta in _unclosed_sessions(store):
        if session_ids is not None and session_id not in session_ids:
            continue
        identity = (meta.get("metadata") or {}).get("recorder")
        if not isinstance(identity, dict):
            identity = None
        state: ProcessState = "unknown" if identity is None else process_state(identity)
        if state != "dead" and not force:
            why = (
                "its recorder is still running"
                if state == "alive"
                else "its recorder cannot be checked from this host (use force)"
            )
            report.skipped.append((session_id, why))
            continue
        why = (
            "the recording process died before the exchange ended"
            if state == "dead"
            else "closed by a forced repair"
        )
        batch, exchanges = _session_batch(store, session_id, why, identity)
        try:
            store.append(batch)
        except StoreError:
            # Another repairer got there first (same seq): nothing left to do here.
            report.skipped.append((session_id, "repaired concurrently by another process"))
            continue
        report.sessions_closed.append(session_id)
        report.exchanges_interrupted.extend(exchanges)
    return report


def repair_dead_writers(store: EventStore) -> RepairReport:
    """What every new recorder runs first: close sessions of dead recorders on this host."""
    return repair(store)

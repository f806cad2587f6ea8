"""Session leases: a session may be repaired only once its recorder has stopped renewing it.

Why a lease in the database. Whether a recorder is alive cannot be judged from
its host name, pid and ``/proc``: two containers on one kernel share a host
name and boot id but not a pid namespace, so each would see the other's live
recorder as dead. The one thing every recorder and every repairer share is
the database, so liveness lives there, as a lease in the style of etcd's and
Chubby's: the recorder holds a lease per open session and renews it; a repair
may close the session only once the lease has expired or was never renewed.
Two other sound-looking schemes fail the case that matters, a recorder that
is stopped (SIGSTOP, a frozen container, a suspended VM) rather than dead:
a PostgreSQL session advisory lock, or a row held ``FOR UPDATE`` by an open
transaction as job queues do with ``SKIP LOCKED``, lives as long as its
connection, and a stopped process's connection stays up (the kernel still
answers for its socket), so its session could never be repaired; neither
exists on SQLite; and both break behind a transaction-pooling proxy.

Guarantees:

* **Taken atomically with the session.** :meth:`LeaseKeeper.hold` registers a
  session; its row in ``leases`` is inserted by the very append that stores
  its ``session_open``, which is marked ``meta["lease"]``. A session in the log
  with that mark had a lease from its first moment; one without it was
  recorded before leases existed (see :mod:`recorder.repair`).
* **The database's clock.** Expiry times are written and compared by the
  database: ``clock_timestamp()`` on PostgreSQL, so the hosts' clocks never
  matter; SQLite's ``julianday('now')``, i.e. the clock of whichever host runs
  the statement, which is sound because a SQLite file is only ever shared by
  processes on one host (containers included: they share the kernel's clock).
* **Renewal off the hot path.** One daemon thread per keeper (one keeper per
  store object, i.e. per database and process) renews every lease it holds
  with one ``UPDATE`` every ``renew_every`` seconds (default 5 s; a lease lasts
  ``duration``, default 30 s). Nothing on the recording path waits for it.
  ``CODETAPE_LEASE_SECONDS`` and ``CODETAPE_LEASE_RENEW_SECONDS`` change the
  defaults; the renewal interval defaults to a third of a shorter lease.
* **Fenced writes.** The keeper is the store's :attr:`~EventStore.guard`: every
  append that carries a held session's events first checks, under the log's
  write lock, that the session's lease row still exists. A repair deletes the
  row under that same lock, in the transaction that appends its
  ``session_close``, so a recorder can never write into a session a repair
  closed, however long it was stopped. The check is one indexed ``SELECT``,
  and none at all while the log's last position is still the one this
  keeper's own last append ended at (nobody else has appended, so nobody can
  have revoked anything): a lone recorder pays a few microseconds per
  commit.
* **Honest continuation.** A recorder that finds its lease gone (it was
  stopped past its lease and a repair closed the session) logs an error and
  goes on in a *continuation session*: a new session whose ``session_open``
  has the same name, labels and metadata plus ``continues`` (the closed
  session's id), followed by a ``capture_gap`` saying why. Exchanges that
  start from then on are recorded there whole. The rest of the exchanges the
  repair ended as ``interrupted`` cannot be recorded: their later events are
  counted, and when each such exchange ends a ``capture_gap`` in the
  continuation names it, its session and how many events were lost.
* **Take over.** A writer that replaces a dead one for a session already in
  the log holds it with ``take_over=True``: its first append moves the row to
  it, in the append's transaction (or goes on in a continuation if a repair
  closed the session meanwhile).
* **Release.** :meth:`LeaseKeeper.release`, called once the session's
  ``session_close`` is stored, deletes the row. :meth:`LeaseKeeper.abandon`
  (a recorder stopping with sessions left open) makes its leases expire at
  once, so a repair need not wait. A recorder killed outright leaves its
  leases to expire.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import operator
import os
import socket
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import sqlalchemy as sa

from recorder.errors import CodetapeError
from recorder.events import Event, EventKind, canonical_json, new_id
from recorder.store.engine import translate_errors
from recorder.store.forkgate import driver_call
from recorder.store.store import Committed, EventStore

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_RENEW_SECONDS",
    "LEASE_SECONDS_ENV",
    "RENEW_SECONDS_ENV",
    "HeldLease",
    "LeaseKeeper",
    "LeaseRow",
    "Taken",
    "abandon_leases",
    "lease_keeper",
    "lease_timing",
    "now_sql",
    "read_leases",
    "take_expired",
]

log = logging.getLogger("codetape.capture")

_SESSION_ID = operator.attrgetter("session_id")

DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_RENEW_SECONDS = 5.0
LEASE_SECONDS_ENV = "CODETAPE_LEASE_SECONDS"
RENEW_SECONDS_ENV = "CODETAPE_LEASE_RENEW_SECONDS"

_LOST_REASON = (
    "the recorder's lease on session {old} expired (the recorder was stopped or cut off "
    "from the database for longer than the lease) and a repair closed that session; "
    "recording continues in this session"
)
_EXCHANGE_LOST_REASON = (
    "the rest of this exchange could not be recorded: a repair had closed its session "
    "after the recorder's lease expired"
)


def now_sql(dialect: str) -> str:
    """SQL for the database's current time in ns since the Unix epoch (see the module doc)."""
    if dialect == "postgresql":
        return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000000 AS BIGINT)"
    return "CAST((julianday('now') - 2440587.5) * 86400000000000.0 AS INTEGER)"


def _seconds(value: float | str, what: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise CodetapeError(f"{what} must be a positive number of seconds, not {value!r}")
    return seconds


def lease_timing(
    duration: float | None = None, renew_every: float | None = None
) -> tuple[float, float]:
    """(lease duration, renewal interval) in seconds: the arguments, else the environment."""
    if duration is None:
        raw = os.environ.get(LEASE_SECONDS_ENV)
        duration = DEFAULT_LEASE_SECONDS if raw is None else _seconds(raw, LEASE_SECONDS_ENV)
    else:
        duration = _seconds(duration, "the lease duration")
    if renew_every is None:
        raw = os.environ.get(RENEW_SECONDS_ENV)
        renew_every = (
            min(DEFAULT_RENEW_SECONDS, duration / 3)
            if raw is None
            else _seconds(raw, RENEW_SECONDS_ENV)
        )
    else:
        renew_every = _seconds(renew_every, "the lease renewal interval")
    if renew_every >= duration:
        raise CodetapeError(
            f"a lease must be renewed more often than it lasts: renewal every {renew_every:g} s, "
            f"lease {duration:g} s"
        )
    return duration, renew_every


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A lease as the database holds it, with the database's time when it was read."""

    session_id: str
    holder: str
    recorder: dict[str, Any]
    renewed_at_ns: int
    expires_at_ns: int
    read_at_ns: int

    @property
    def live(self) -> bool:
        return self.expires_at_ns > self.read_at_ns

    @property
    def expires_in_s(self) -> float:
        """Seconds until it expires (negative: since it expired), on the database's clock."""
        return (self.expires_at_ns - self.read_at_ns) / 1e9


_LEASE_COLUMNS = "session_id, holder, recorder, renewed_at_ns, expires_at_ns"


def _lease_row(row: Sequence[Any]) -> LeaseRow:
    try:
        recorder = json.loads(row[2])
    except ValueError:
        recorder = {}
    return LeaseRow(
        row[0], row[1], recorder if isinstance(recorder, dict) else {}, row[3], row[4], row[5]
    )


def read_leases(store: EventStore, session_ids: Iterable[str]) -> dict[str, LeaseRow]:
    """The lease rows of ``session_ids`` that exist (no row: released, revoked or never taken)."""
    wanted = sorted(set(session_ids))
    if not wanted:
        return {}
    query = sa.text(
        f"SELECT {_LEASE_COLUMNS}, {now_sql(store.backend)} FROM leases WHERE session_id IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    with translate_errors(store.url), store.engine.connect() as conn:
        rows = conn.execute(query, {"ids": wanted}).all()
    return {row[0]: _lease_row(row) for row in rows}


Taken = Literal["taken", "live", "absent"]


def take_expired(
    conn: sa.Connection, session_id: str, *, force: bool
) -> tuple[Taken, LeaseRow | None]:
    """Under the log's write lock: revoke the session's lease if it has expired (or ``force``).

    Returns ``("taken", row)`` when it deleted the row, ``("live", row)`` when
    the lease is live and was left alone, ``("absent", None)`` when there was
    no row. On PostgreSQL the row is locked first, so a renewal in flight
    either lands before the check (and the lease is live) or finds the row
    gone; on SQLite the write lock the caller holds already excludes it.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(
            sa.text("SELECT 1 FROM leases WHERE session_id = :s FOR UPDATE"), {"s": session_id}
        )
    row = conn.execute(
        sa.text(f"SELECT {_LEASE_COLUMNS}, {now_sql(dialect)} FROM leases WHERE session_id = :s"),
        {"s": session_id},
    ).first()
    if row is None:
        return "absent", None
    lease = _lease_row(row)
    if lease.live and not force:
        return "live", lease
    conn.execute(sa.text("DELETE FROM leases WHERE session_id = :s"), {"s": session_id})
    return "taken", lease


@dataclass(slots=True)
class _Lost:
    """An exchange whose session was closed under it: its later events are dropped."""

    session_id: str
    first_seq: int
    count: int = 0


@dataclass(slots=True)
class _Held:
    session_id: str
    """The id the capture session writes its events under."""
    current: str
    """Where those events go: the session itself, or its latest continuation."""
    opened: bool = False
    open_meta: dict[str, Any] = field(default_factory=dict)
    moved: set[str] = field(default_factory=set)
    """Exchanges that began in ``current`` after it became a continuation."""
    lost: dict[str, _Lost] = field(default_factory=dict)
    lost_events: int = 0
    continuations: int = 0
    take_over: bool = False
    """The session is in the log already (its writer was replaced): take its row."""


class HeldLease:
    """A view of one held session's lease, for the capture session that holds it."""

    __slots__ = ("_held", "_keeper")

    def __init__(self, keeper: LeaseKeeper, held: _Held) -> None:
        self._keeper = keeper
        self._held = held

    @property
    def session_id(self) -> str:
        return self._held.session_id

    @property
    def current_session_id(self) -> str:
        """The session its events now go to (itself unless its lease was lost)."""
        return self._held.current

    @property
    def lost_events(self) -> int:
        """Events dropped because a repair had closed their exchange's session."""
        return self._held.lost_events

    @property
    def continuations(self) -> int:
        return self._held.continuations

    def release(self) -> None:
        self._keeper.release(self._held.session_id)


_keepers: weakref.WeakSet[LeaseKeeper] = weakref.WeakSet()
_keepers_lock = threading.Lock()


def lease_keeper(
    store: EventStore,
    *,
    duration: float | None = None,
    renew_every: float | None = None,
    identity: dict[str, Any] | None = None,
) -> LeaseKeeper:
    """The keeper of ``store`` (its guard), made now if it has none."""
    with _keepers_lock:
        guard = store.guard
        if isinstance(guard, _Guard):
            return guard.keeper
        return LeaseKeeper(store, duration=duration, renew_every=renew_every, identity=identity)


def abandon_leases(store: EventStore) -> None:
    """:meth:`LeaseKeeper.abandon` for ``store``'s keeper, if it has one."""
    guard = store.guard
    if isinstance(guard, _Guard):
        guard.keeper.abandon()


class _Guard:
    """The store's guard: a plain callable holding its keeper (see EventStore.guard)."""

    __slots__ = ("keeper",)

    def __init__(self, keeper: LeaseKeeper) -> None:
        self.keeper = keeper

    def __call__(
        self, conn: sa.Connection, items: list[Event], head: int
    ) -> tuple[list[Event], Committed | None]:
        return self.keeper.fence(conn, items, head)


class LeaseKeeper:
    """The leases this process holds in one store, their renewer, and the fence on its appends."""

    def __init__(
        self,
        store: EventStore,
        *,
        duration: float | None = None,
        renew_every: float | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.duration, self.renew_every = lease_timing(duration, renew_every)
        self.identity = identity or {"host": socket.gethostname(), "pid": os.getpid()}
        self.holder = new_id()
        self._now = now_sql(store.backend)
        marker = "?" if store.backend == "sqlite" else "%s"
        self._held_sql = f"SELECT session_id FROM leases WHERE holder = {marker}"
        self._head: int | None = None
        """The log's last position after an append through this keeper at which every
        lease it holds was known to be valid (see :meth:`fence`)."""
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.renewals = 0
        self.renewal_failures = 0
        """Failed renewals in a row (0 when the last one succeeded)."""
        self._reported: set[str] = set()
        store.guard = _Guard(self)
        _keepers.add(self)

    # -- holding -------------------------------------------------------------

    def hold(self, session_id: str, *, take_over: bool = False) -> HeldLease:
        """Hold ``session_id`` from its ``session_open`` on (call before submitting it).

        ``take_over``: the session is open in the log already and its writer
        is gone (a replaced writer process): the next append of its events
        takes its lease row over, or, if a repair closed the session
        meanwhile, goes on in a continuation as described above.
        """
        with self._lock:
            held = self._held.get(session_id)
            if held is None:
                held = self._held[session_id] = _Held(session_id, session_id, take_over=take_over)
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop,), name="codetape-lease", daemon=True
                )
                self._thread.start()
        return HeldLease(self, held)

    def release(self, session_id: str) -> None:
        """Stop holding ``session_id`` (after its ``session_close`` is stored) and drop its row."""
        with self._lock:
            held = self._held.pop(session_id, None)
        if held is None or not held.opened:
            return
        if held.lost:
            log.error(
                "codetape: %d exchange(s) of session %s never ended after its lease was lost; "
                "their remaining events were not recorded",
                len(held.lost),
                held.session_id,
            )
        try:
            with translate_errors(self.store.url), self._write() as conn, conn.begin():
                conn.execute(
                    sa.text("DELETE FROM leases WHERE session_id = :s AND holder = :h"),
                    {"s": held.current, "h": self.holder},
                )
        except Exception as exc:
            # Harmless: the row expires, and a repair deletes rows of closed sessions.
            log.warning("codetape: could not release the lease on %s: %s", held.current, exc)

    def abandon(self) -> None:
        """Stop renewing and let every lease held here expire now (sessions left open)."""
        with self._lock:
            held = [h for h in self._held.values() if h.opened]
            self._held.clear()
            self._stop_renewer()
        if not held:
            return
        try:
            with translate_errors(self.store.url), self._write() as conn, conn.begin():
                conn.execute(
                    sa.text(f"UPDATE leases SET expires_at_ns = {self._now} WHERE holder = :h"),
                    {"h": self.holder},
                )
        except Exception as exc:
            log.warning("codetape: could not give up the recorder's leases: %s", exc)

    def held(self) -> list[str]:
        """The sessions held here (as their capture sessions know them)."""
        with self._lock:
            return list(self._held)

    def _stop_renewer(self) -> None:
        # Lock held. The thread exits at once; hold() starts another.
        self._stop.set()
        self._thread = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        # The renewer is a background thread: a fork waits for its transaction.
        with driver_call(), self.store.engine.connect() as conn:
            yield conn.execution_options(sqlite_begin="IMMEDIATE")

    # -- renewing ------------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.renew_every):
            with self._lock:
                if not self._held:
                    # Idle for a whole interval: stop. The thread outlives a
                    # release so that back-to-back sessions do not each pay
                    # for starting one (a millisecond or more on a busy host).
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
            self.renew()

    def renew(self) -> set[str]:
        """Renew every lease held here now; return the sessions whose lease was found gone."""
        with self._lock:
            expected = {h.current for h in self._held.values() if h.opened}
        if not expected:
            return set()
        try:
            with translate_errors(self.store.url), self._write() as conn, conn.begin():
                rows = conn.execute(
                    sa.text(
                        "UPDATE leases SET renewed_at_ns = t.n, expires_at_ns = t.n + duration_ns "
                        f"FROM (SELECT {self._now} AS n) t "
                        "WHERE holder = :h RETURNING session_id"
                    ),
                    {"h": self.holder},
                ).all()
        except Exception as exc:
            self.renewal_failures += 1
            if self.renewal_failures == 1:  # once per outage, not every few seconds
                log.warning(
                    "codetape: could not renew the recorder's leases (%s); retrying every %g s "
                    "(after %g s without renewal, a repair may close its sessions)",
                    exc,
                    self.renew_every,
                    self.duration,
                )
            return set()
        if self.renewal_failures:
            log.warning("codetape: the recorder's leases are renewed again")
        self.renewal_failures = 0
        self.renewals += 1
        with self._lock:
            # A continuation made meanwhile replaced what was expected: not lost.
            current = {h.current for h in self._held.values() if h.opened}
        lost = (expected & current) - {r[0] for r in rows}
        for session_id in lost - self._reported:
            self._reported.add(session_id)
            log.error(
                "codetape: the lease on session %s was lost (it expired and a repair closed "
                "the session); what follows is recorded in a continuation session",
                session_id,
            )
        return lost

    # -- fencing (EventStore.guard: runs under the log's write lock) ---------

    def fence(
        self, conn: sa.Connection, items: list[Event], head: int
    ) -> tuple[list[Event], Committed | None]:
        """Check, under the write lock, that the held sessions in ``items`` still have their lease.

        Returns the batch to append (rewritten into a continuation where a
        lease was lost) and what to note once it has committed. ``head`` is
        the log's last position: when it is still the position this keeper's
        last append ended at, nobody has appended since, so no repair (which
        appends in the transaction that deletes a lease) and no take-over can
        have revoked a lease held here, and the check costs no statement.
        """
        with self._lock:
            if not self._held:
                return items, None
            touched = set(map(_SESSION_ID, items))
            plans = [_Plan.of(h) for sid, h in self._held.items() if sid in touched]
            if not plans:
                return items, None
            alive: set[str] | None = None  # None: all of them, as of the last append
            if head != self._head:
                rows = conn.exec_driver_sql(self._held_sql, (self.holder,)).all()
                alive = {r[0] for r in rows}
            for plan in plans:
                self._check(conn, plan, items, alive)
            others_alive = alive is None or all(
                h.current in alive
                for sid, h in self._held.items()
                if h.opened and sid not in touched
            )
            committed = self._committed(plans, head, others_alive)
            if all(p.untouched for p in plans):
                return items, committed
            by_session = {p.held.session_id: p for p in plans}
            out: list[Event] = []
            for plan in plans:
                out.extend(plan.prologue)
            for ev in items:
                plan_for = by_session.get(ev.session_id)
                if plan_for is None:
                    out.append(ev)
                else:
                    plan_for.place(ev, out)
            return out, committed

    def _check(
        self, conn: sa.Connection, plan: _Plan, items: list[Event], alive: set[str] | None
    ) -> None:
        held = plan.held
        if not held.opened and held.take_over:
            self._take_over(conn, plan)
            return
        if not held.opened:
            opening = next(
                (
                    ev
                    for ev in items
                    if ev.session_id == held.session_id and ev.kind is EventKind.SESSION_OPEN
                ),
                None,
            )
            if opening is not None:
                self._insert(conn, held.session_id)
                plan.open_meta = dict(opening.meta)
                plan.marked_open = self._marked(opening)
                plan.untouched = False
            return
        held_on = alive is None or held.current in alive
        if not held_on:
            self._continue(conn, plan)
        plan.untouched = plan.target == held.session_id and not held.lost and held_on

    def _committed(self, plans: list[_Plan], head: int, others_alive: bool) -> Committed:
        def apply(positions: list[int]) -> None:
            with self._lock:
                for plan in plans:
                    plan.apply()
                # Every lease held here is valid as of the new head, unless a
                # session outside this batch was found without its lease: then
                # its next append must look again.
                self._head = (positions[-1] if positions else head) if others_alive else None

        return apply

    def _take_over(self, conn: sa.Connection, plan: _Plan) -> None:
        held = plan.held
        opening = conn.execute(
            sa.text("SELECT meta FROM event_rows WHERE session_id = :s AND kind = 'session_open'"),
            {"s": held.session_id},
        ).scalar()
        plan.open_meta = json.loads(opening) if opening else {}
        taken = conn.execute(
            sa.text(
                "UPDATE leases SET holder = :h, recorder = :r, duration_ns = :d, "
                "renewed_at_ns = t.n, expires_at_ns = t.n + :d "
                f"FROM (SELECT {self._now} AS n) t WHERE session_id = :s RETURNING session_id"
            ),
            {
                "s": held.session_id,
                "h": self.holder,
                "r": canonical_json(self.identity),
                "d": int(self.duration * 1e9),
            },
        ).first()
        if taken is None:
            self._continue(conn, plan)
            plan.untouched = False

    def _continue(self, conn: sa.Connection, plan: _Plan) -> None:
        """The lease on ``plan``'s session is gone: open a continuation in this transaction."""
        held = plan.held
        old = held.current
        new = new_id()
        self._insert(conn, new)
        source = plan.open_meta if plan.open_meta is not None else held.open_meta
        meta = {k: v for k, v in source.items() if k not in ("lease", "continues")}
        meta["continues"] = old
        reason = _LOST_REASON.format(old=old)
        plan.prologue = [
            self._marked(Event(new, EventKind.SESSION_OPEN, 0, meta=meta)),
            Event(
                new,
                EventKind.CAPTURE_GAP,
                1,
                meta={"reason": reason, "continues": old, "lease_lost": True},
            ),
        ]
        # Exchanges that had begun in ``old`` were ended there by the repair.
        for xid in plan.moved:
            plan.home[xid] = old
        plan.moved = set()
        plan.target = new
        plan.continued_from = old

    def _insert(self, conn: sa.Connection, session_id: str) -> None:
        conn.execute(
            sa.text(
                "INSERT INTO leases (session_id, holder, recorder, duration_ns, acquired_at_ns, "
                "renewed_at_ns, expires_at_ns) "
                f"SELECT :s, :h, :r, :d, t.n, t.n, t.n + :d FROM (SELECT {self._now} AS n) t"
            ),
            {
                "s": session_id,
                "h": self.holder,
                "r": canonical_json(self.identity),
                "d": int(self.duration * 1e9),
            },
        )

    def _marked(self, opening: Event) -> Event:
        meta = dict(opening.meta)
        meta["lease"] = {
            "holder": self.holder,
            "seconds": self.duration,
            "renew_seconds": self.renew_every,
        }
        return replace(opening, meta=meta)

    # -- after fork ----------------------------------------------------------

    def _forked(self) -> None:
        """In a forked child: the parent's leases are the parent's. Hold nothing, renew nothing."""
        self._lock = threading.Lock()
        self._held = {}
        self._thread = None
        self._stop = threading.Event()
        self._head = None
        self.holder = new_id()


@dataclass(slots=True)
class _Plan:
    """What one append does to one held session; applied to the keeper only once committed."""

    held: _Held
    target: str
    moved: set[str]
    lost: dict[str, _Lost]
    home: dict[str, str] = field(default_factory=dict)
    prologue: list[Event] = field(default_factory=list)
    open_meta: dict[str, Any] | None = None
    marked_open: Event | None = None
    continued_from: str | None = None
    dropped: int = 0
    untouched: bool = True

    def apply(self) -> None:
        """The append committed: what it decided becomes the keeper's state."""
        held = self.held
        if self.open_meta is not None:
            held.opened = True
            held.open_meta = self.open_meta
        if self.continued_from is not None:
            held.continuations += 1
            log.error(
                "codetape: the lease on session %s was lost (the recorder was stopped or cut "
                "off for longer than the lease, and a repair closed the session); recording "
                "continues in session %s, and events of exchanges already under way are "
                "counted as lost",
                self.continued_from,
                self.target,
            )
        held.current = self.target
        held.moved = self.moved
        held.lost = self.lost
        held.lost_events += self.dropped

    @classmethod
    def of(cls, held: _Held) -> _Plan:
        # Copies: nothing reaches the keeper unless the append commits.
        lost = {xid: replace(entry) for xid, entry in held.lost.items()}
        return cls(held, held.current, set(held.moved), lost)

    def place(self, ev: Event, out: list[Event]) -> None:
        """Append ``ev`` to ``out`` as it must be stored, or count it as lost."""
        if ev.kind is EventKind.SESSION_OPEN and self.marked_open is not None:
            out.append(self.marked_open)
            return
        target = self.target
        xid = ev.exchange_id
        if xid is None:
            out.append(ev if target == ev.session_id else replace(ev, session_id=target, seq=None))
            return
        if target == self.held.session_id and not self.lost and self.continued_from is None:
            out.append(ev)
            return
        if xid in self.moved or (ev.kind is EventKind.REQUEST and xid not in self.lost):
            self.moved.add(xid)
            out.append(ev if target == ev.session_id else replace(ev, session_id=target))
            return
        lost = self.lost.get(xid)
        if lost is None:
            home = self.home.get(xid, self.held.session_id)
            lost = self.lost[xid] = _Lost(home, ev.seq if ev.seq is not None else 0)
        lost.count += 1
        self.dropped += 1
        if ev.kind is EventKind.EXCHANGE_END:
            del self.lost[xid]
            out.append(
                Event(
                    target,
                    EventKind.CAPTURE_GAP,
                    None,
                    recorded_at_ns=ev.recorded_at_ns,
                    meta={
                        "exchange": xid,
                        "session": lost.session_id,
                        "lost_events": lost.count,
                        "first_lost_seq": lost.first_seq,
                        "reason": _EXCHANGE_LOST_REASON,
                    },
                )
            )


def _after_fork_in_child() -> None:
    for keeper in list(_keepers):
        keeper._forked()


if hasattr(os, "register_at_fork"):  # absent on some platforms; there is no fork there either
    os.register_at_fork(after_in_child=_after_fork_in_child)

"""The group-commit writer: a session's events appended in batches, off the producer's path.

A :class:`Writer` owns one thread that appends what has queued with one
:meth:`~recorder.store.store.EventStore.append` (one transaction) at most
``flush_interval`` after it arrived, so a stream of N events costs about
N / batch commits, never N. It is the sink of ``writer="thread"`` sessions,
and what the recorder child runs for every session of ``writer="process"``.

Guarantees:

* **Submitting never blocks and never touches the database.**
  :meth:`Writer.submit` queues the event and returns. When the producer
  should slow down it says so (:attr:`Writer.congested`), and the producer
  waits *between* chunks, with :meth:`Writer.wait_for_room` (a thread) or
  ``await`` :meth:`Writer.wait_for_room_async` (an event loop, which keeps
  running meanwhile).
* **Order.** Events are appended in submission order, so each exchange's
  events keep their order and ``seq`` stays dense.
* **Loss window.** While the store keeps up, nothing waits uncommitted for
  longer than ``max_lag`` (default 120 ms) plus one commit: past it the
  producer is asked to wait. A process killed with SIGKILL therefore loses
  at most the events of the last ``max_lag`` + one commit (under 200 ms on a
  healthy store, measured on fast streams by the durability tests).
* **A busy store is a delay, not a loss.** SQLite's ``database is locked``,
  PostgreSQL lock and statement timeouts, and commits that wait on a lock
  (``stall_after`` or longer; on PostgreSQL, a commit the server says waits
  for a lock another transaction holds) keep the events queued and
  retry; the producer is only held back once ``max_pending_bytes`` (default
  64 MiB) are queued.
* **A failing store never blocks the producer.** If the store cannot be
  reached (even if it answers again a moment later, as a restarting
  PostgreSQL does), the batch is kept and retried (up to ``max_pending_bytes``;
  beyond that, new events are dropped and counted). If it refuses the write
  (disk full, a constraint), the batch's body events are dropped. Either way
  a damaged exchange keeps a valid shape: its events stop at the first lost
  one, its ``exchange_end`` still lands (renumbered to follow the last stored
  event, with ``capture_gap`` details), and a session-level ``capture_gap``
  event says what was lost once the store takes writes again.
* **A bug is not an outage.** An event that cannot be encoded (a codetape
  bug) is logged as such and dropped alone, its exchange marked as a capture
  gap; the rest of the batch is stored and nothing is retried.
* **Fork-safe.** In a forked child every writer starts afresh (new locks,
  new thread, new database connections, none of the parent's queue, which the
  parent stores), so the child records its own events.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recorder.errors import DatabaseUnavailable, StoreBusy, StoreError
from recorder.events import Event, EventKind, canonical_json
from recorder.process_exit import at_exit
from recorder.store.engine import is_process_local
from recorder.store.forkgate import driver_call
from recorder.store.store import EventStore
from recorder.waiting import Waiters

__all__ = ["Writer", "WriterStats"]

log = logging.getLogger("codetape.capture")

DEFAULT_FLUSH_INTERVAL = 0.05
DEFAULT_MAX_LAG = 0.12
DEFAULT_STALL_AFTER = 0.5
DEFAULT_MAX_BATCH = 2000
DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
# A waiting producer re-checks this often: the loss window and a stall are
# matters of time, not only of the writer's notifications.
_RECHECK = 0.05


@dataclass(slots=True)
class WriterStats:
    """Counters a user (or a test) can read at any time."""

    submitted: int = 0
    stored: int = 0
    lost: int = 0
    commits: int = 0
    store_errors: int = 0
    busy_retries: int = 0
    recorder_errors: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class _Damage:
    """An exchange that lost events: everything from ``first_lost_seq`` on."""

    session_id: str
    first_lost_seq: int
    reason: str
    lost: int = 0
    request: dict[str, Any] | None = None


# One queued entry: (ticket, submitted at (monotonic), event, events stored right after it).
_Entry = tuple[int, float, Event, tuple[Event, ...]]


def _size(event: Event) -> int:
    # Payload plus a flat estimate of the event object itself, so a flood of
    # tiny events counts too.
    return len(event.payload) + 256


_live: weakref.WeakSet[Writer] = weakref.WeakSet()


def _close_all() -> None:
    # A daemon writer thread dies with the interpreter: store what is queued first.
    for writer in list(_live):
        writer.forked()  # a copy from a fork no hook reset holds the parent's locks and queue
        writer.close(timeout=5.0)


at_exit(_close_all)


def _after_fork_in_child() -> None:
    for writer in list(_live):
        writer.forked()


if hasattr(os, "register_at_fork"):  # not on every platform: sessions also check the pid
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Writer:
    """Appends submitted events to ``store`` in the background, in order, in batches.

    ``on_progress(ticket)`` is called from the writer thread whenever every
    event up to ``ticket`` (see :meth:`submit`) is resolved, stored or dropped.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_lag: float = DEFAULT_MAX_LAG,
        stall_after: float = DEFAULT_STALL_AFTER,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        retry_interval: float = 0.05,
        on_progress: Callable[[int], None] | None = None,
        name: str = "codetape-writer",
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.max_lag = max_lag
        self.stall_after = stall_after
        self.max_batch = max_batch
        self.max_pending_bytes = max_pending_bytes
        self.retry_interval = retry_interval
        self._on_progress = on_progress
        self._name = name
        self.congested = False
        """True when the producer should wait (see :meth:`wait_for_room`); read without a lock."""
        self._init_state()
        _live.add(self)

    def _init_state(self) -> None:
        self.stats = WriterStats()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        # Producers waiting for room, and flushes waiting for their events.
        self._done = Waiters(self._lock, _RECHECK)
        self._queue: deque[_Entry] = deque()
        self._pending_bytes = 0
        self._ticket = 0
        self._done_ticket = 0
        self._urgent = False
        self._closing = False
        self._close_deadline = 0.0
        self._closed = False
        self._state = "ok"  # "ok", "busy" (locked elsewhere: retrying), "failing"
        self._inflight_at = 0.0  # submit time of the oldest event being committed
        self._commit_started = 0.0
        self._damaged: dict[str, _Damage] = {}
        self.congested = False
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        # Started on first use: a forked child that never records starts no thread.
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    # -- producer side (any thread) ------------------------------------------

    @property
    def ticket(self) -> int:
        """The ticket of the last event submitted (tickets count submissions from 1)."""
        return self._ticket

    @property
    def done_ticket(self) -> int:
        """Every event up to this ticket is resolved: stored, or dropped and counted."""
        return self._done_ticket

    def submit(self, event: Event) -> bool:
        """Queue ``event``; False when it was dropped (see the module docstring).

        Never waits: check :attr:`congested` afterwards and wait between chunks.
        """
        # Once per recorded event on the client's thread: kept lean.
        with self._lock:
            if self._thread is None:
                self._start()
            self.stats.submitted += 1
            if self._closing:
                self.stats.lost += 1
                return False
            size = len(event.payload) + 256
            if (
                self._state == "failing"
                and self._pending_bytes + size > self.max_pending_bytes
                and event.exchange_id is not None
                and event.kind is not EventKind.EXCHANGE_END
                and event.exchange_id not in self._damaged
            ):
                self._damage(event, "the store was unavailable and too many events were pending")
                self.stats.lost += 1
                return False
            extra: tuple[Event, ...] = ()
            if self._damaged and event.exchange_id in self._damaged:
                admitted = self._admit(event)
                if admitted is None:
                    return False
                event, extra = admitted
                size = _size(event)
            self._ticket += 1
            now = time.monotonic()
            queue = self._queue
            if not queue:
                self._work.notify()
            queue.append((self._ticket, now, event, extra))
            self._pending_bytes += size
            if len(queue) == self.max_batch:
                self._work.notify()
            # _evaluate's common case, inlined: nothing old and the bound far off.
            oldest = self._inflight_at or queue[0][1]
            if (
                self.congested
                or now - oldest > self.max_lag
                or (self._pending_bytes > self.max_pending_bytes)
            ):
                self._evaluate(now)
        return True

    def _evaluate(self, now: float) -> None:
        """Set :attr:`congested` (lock held)."""
        if self._state == "failing" or self._closing:
            congested = False
        elif self._pending_bytes > self.max_pending_bytes:
            congested = True
        elif self._state == "busy" or self._stalled(now):
            congested = False  # a delay: keep taking events up to the memory bound
        else:
            oldest = self._inflight_at or (self._queue[0][1] if self._queue else 0.0)
            congested = bool(oldest) and now - oldest > self.max_lag
        self.congested = congested

    def _stalled(self, now: float) -> bool:
        if not self._commit_started:
            return False
        if now - self._commit_started > self.stall_after:
            return True
        # A commit queued behind another transaction's lock is a delay now,
        # not after stall_after: the producer need not wait for that lock.
        # A commit that is only slow (a server short of CPU) is not: the
        # producer is held to the loss window meanwhile.
        thread = self._thread
        return self.store.lock_wait_since(None if thread is None else thread.ident) is not None

    @property
    def stalled(self) -> bool:
        """True while the store is busy or a commit has waited ``stall_after`` or longer."""
        return self._state == "busy" or self._stalled(time.monotonic())

    def _blocked(self) -> bool:
        self._evaluate(time.monotonic())
        if self.congested:
            # Whoever waits wants the writer to commit now, not after its linger.
            self._urgent = True
            self._work.notify()
        return self.congested

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Wait (this thread) until the producer may go on; False if ``timeout`` passed first."""
        with self._lock:
            return self._done.wait(self._blocked, timeout)

    async def wait_for_room_async(self) -> None:
        """Await until the producer may go on; the event loop keeps running meanwhile."""
        await self._done.wait_async(self._blocked)

    def abandon(self, event: Event, reason: str) -> None:
        """Record that ``event`` (and the rest of its exchange) will not be stored."""
        with self._lock:
            self.stats.submitted += 1
            self.stats.lost += 1
            self.stats.recorder_errors += 1
            if event.exchange_id is not None:
                self._damage(event, reason)

    def damage(
        self, exchange_id: str, session_id: str, first_lost_seq: int, lost: int, reason: str
    ) -> None:
        """Mark ``exchange_id`` as having lost ``lost`` events from ``first_lost_seq`` on."""
        with self._lock:
            self.stats.lost += lost
            damage = self._damaged.get(exchange_id)
            if damage is None:
                self._damaged[exchange_id] = _Damage(session_id, first_lost_seq, reason, lost)
            else:
                damage.lost += lost

    def flush(self, timeout: float | None = None, *, fail_fast: bool = False) -> bool:
        """Wait until everything submitted so far is resolved; True if nothing is pending.

        ``fail_fast`` stops waiting (False) as soon as the store is failing.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._ticket
            self._urgent = True
            self._work.notify()

            def pending() -> bool:
                thread = self._thread
                if self._done_ticket >= target or thread is None or not thread.is_alive():
                    return False
                return not (fail_fast and self._state == "failing")

            self._done.wait(pending, None if deadline is None else deadline - time.monotonic())
            return self._done_ticket >= target

    @property
    def failing(self) -> bool:
        """True while the store refuses or cannot take writes."""
        return self._state == "failing"

    def current_stats(self) -> WriterStats:
        """A copy of the counters, taken consistently."""
        with self._lock:
            return dataclasses.replace(self.stats)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued (retrying a busy or failing store up to ``timeout``), then stop."""
        with self._lock:
            if self._closed:
                return
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout
            self._work.notify()
            thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout + 5.0)
        with self._lock:
            self._closed = True
            self.congested = False
            self._done.wake()
        _live.discard(self)

    def forked(self) -> None:
        """In a forked child: start afresh, leaving the parent's queue to the parent."""
        if self._pid == os.getpid():
            return
        closed = self._closed
        self._init_state()
        self._closed = closed
        # The pooled connections belong to the parent: drop them without closing
        # them (as SQLAlchemy advises), so this process opens its own. An
        # in-memory database is this process's copy: keep its one connection.
        if not is_process_local(self.store.url):
            self.store.forked()

    # -- loss bookkeeping (lock held) ----------------------------------------

    def _damage(self, event: Event, reason: str) -> None:
        xid = event.exchange_id
        assert xid is not None
        damage = self._damaged.get(xid)
        if damage is None:
            damage = self._damaged[xid] = _Damage(
                event.session_id, event.seq if event.seq is not None else 0, reason
            )
            if event.kind is EventKind.REQUEST:
                damage.request = {
                    "method": event.meta.get("method"),
                    "url": event.meta.get("url"),
                }
        damage.lost += 1

    def _admit(self, event: Event) -> tuple[Event, tuple[Event, ...]] | None:
        """What to queue for ``event`` of a damaged exchange (None: it is lost too)."""
        xid = event.exchange_id
        assert xid is not None
        damage = self._damaged[xid]
        if event.seq is not None and event.seq < damage.first_lost_seq:
            return event, ()  # it came before the loss (queued with the bad event's batch)
        if event.kind is not EventKind.EXCHANGE_END:
            damage.lost += 1
            self.stats.lost += 1
            return None
        del self._damaged[xid]
        gap = self._gap_event(xid, damage)
        if damage.first_lost_seq == 0:
            # The request itself was lost: the exchange is absent, only the gap says so.
            self.stats.lost += 1
            return gap, ()
        meta = dict(event.meta)
        meta["capture_gap"] = {"lost_events": damage.lost, "reason": damage.reason}
        end = dataclasses.replace(event, seq=damage.first_lost_seq, meta=meta)
        return end, (gap,)

    @staticmethod
    def _gap_event(exchange_id: str, damage: _Damage) -> Event:
        meta: dict[str, Any] = {
            "exchange": exchange_id,
            "reason": damage.reason,
            "lost_events": damage.lost,
            "first_lost_seq": damage.first_lost_seq,
        }
        if damage.request is not None:
            meta["request"] = damage.request
        return Event(damage.session_id, EventKind.CAPTURE_GAP, None, meta=meta)

    # -- the writer thread ---------------------------------------------------

    def _run(self) -> None:
        self.store.on_lock_wait(self._lock_waited)
        try:
            while True:
                with self._lock:
                    batch = self._take_batch()
                    if batch is None:
                        break
                if batch:
                    self._commit(batch)
        finally:
            # Before the last append below, made with the lock held: the
            # callback takes that lock, so it must not run inside it.
            self.store.on_lock_wait(None)
        with self._lock:
            self._flush_leftover_damage()
            self._done_ticket = self._ticket
            self._done.wake()
        self._finished()

    def _lock_waited(self) -> None:
        """The commit in progress waits for another transaction's lock: a delay, so a
        producer held back by the loss window may go on now (see :meth:`_stalled`)."""
        with self._lock:
            self._evaluate(time.monotonic())
            self._done.wake()

    def _finished(self) -> None:
        """Called by the writer thread as it ends, everything it could store stored."""

    @property
    def running(self) -> bool:
        """Whether the writer thread is still at work (after :meth:`close`: it timed out)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _take_batch(self) -> list[_Entry] | None:
        """Wait for work and linger for the group commit; None when it is time to stop."""
        while not self._queue and not self._closing:
            self._work.wait()
        if not self._queue:
            return None
        if self._state != "ok":
            if self._closing and time.monotonic() > self._close_deadline:
                self._give_up()
                return None
            self._work.wait(self.retry_interval)
        else:
            deadline = self._queue[0][1] + self.flush_interval
            while len(self._queue) < self.max_batch and not self._urgent and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._work.wait(remaining)
        batch: list[_Entry] = []
        size = 0
        queue = self._queue
        while queue and len(batch) < self.max_batch and size < DEFAULT_MAX_BATCH_BYTES:
            entry = queue.popleft()
            size += _size(entry[2])
            batch.append(entry)
        self._pending_bytes -= size
        if not queue:
            self._urgent = False
        self._inflight_at = batch[0][1] if batch else 0.0
        self._commit_started = time.monotonic()
        return batch

    def _commit(self, batch: list[_Entry]) -> None:
        events: list[Event] = []
        add = events.append
        for entry in batch:
            add(entry[2])
            if entry[3]:
                events.extend(entry[3])
        try:
            self.store.append(events)
        except StoreBusy as exc:
            self._busy(batch, exc)
            return
        except StoreError as exc:
            self._failed(batch, exc)
            return
        except Exception as exc:
            self._bug(batch, exc)
            return
        with self._lock:
            if self._state != "ok":
                log.warning("codetape: the store takes writes again")
            self._state = "ok"
            self.stats.commits += 1
            self.stats.stored += len(events)
            self._resolved(batch[-1][0])
        self._progress()

    def _requeue(self, batch: list[_Entry]) -> None:
        """Put ``batch`` back, in order, in front of what queued meanwhile (lock held)."""
        for entry in reversed(batch):
            self._queue.appendleft(entry)
            self._pending_bytes += _size(entry[2])
        self._inflight_at = 0.0
        self._commit_started = 0.0

    def _busy(self, batch: list[_Entry], exc: StoreBusy) -> None:
        with self._lock:
            self.stats.busy_retries += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if self._state != "busy":
                log.warning("codetape: %s; the events are kept and written once it is free", exc)
            self._state = "busy"
            self._requeue(batch)
            self._evaluate(time.monotonic())
            self._done.wake()

    def _failed(self, batch: list[_Entry], exc: Exception) -> None:
        # A server that could not be reached refused nothing, even when it
        # answers the probe a moment later (a restarted PostgreSQL says "not
        # yet accepting connections", then is ready): the batch waits, as it
        # would for an outage the probe still sees. (SQLite's DatabaseUnavailable
        # is a file it cannot write, which the probe tells apart.)
        unreachable = isinstance(exc, DatabaseUnavailable) and self.store.backend != "sqlite"
        reachable = not unreachable and self._probe()
        with self._lock:
            self.stats.store_errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if self._state != "failing":
                log.warning("codetape: could not store events (%s)", self.stats.last_error)
            self._state = "failing"
            if not reachable:
                self._requeue(batch)
            else:
                self._refused(batch, f"the store refused the write: {self.stats.last_error}")
            self._evaluate(time.monotonic())
            self._done.wake()
        self._progress()

    def _bug(self, batch: list[_Entry], exc: Exception) -> None:
        """Appending raised something no store raises: find the events at fault, drop them."""
        bad = [entry for entry in batch if not _encodable(entry[2], *entry[3])]
        log.error(
            "codetape bug: %d event(s) could not be encoded and were dropped (%s: %s)",
            len(bad) or len(batch),
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        with self._lock:
            # Without a culprit the whole batch goes: retrying it would fail again.
            culprits = {id(entry) for entry in bad} if bad else {id(entry) for entry in batch}
            self.stats.recorder_errors += len(culprits)
            reason = f"codetape bug: an event could not be encoded ({type(exc).__name__}: {exc})"
            kept: list[_Entry] = []
            for entry in batch:
                if id(entry) not in culprits:
                    kept.append(entry)
                    continue
                for event in (entry[2], *entry[3]):
                    self.stats.lost += 1
                    if event.exchange_id is not None:
                        self._damage(event, reason)
            self._requeue(kept)
            self._reroute_damaged()
            self._evaluate(time.monotonic())
        self._progress()

    def _refused(self, batch: list[_Entry], reason: str) -> None:
        """Drop the batch's body events; keep session events and exchange ends, renumbered."""
        kept: list[_Entry] = []
        for ticket, at, event, extra in batch:
            for ev in (event, *extra):
                if ev.exchange_id is None or (
                    ev.kind is EventKind.EXCHANGE_END and ev.exchange_id not in self._damaged
                ):
                    kept.append((ticket, at, ev, ()))
                elif ev.kind is EventKind.EXCHANGE_END:
                    end, gaps = self._admit(ev) or (None, ())
                    if end is not None:
                        kept.append((ticket, at, end, gaps))
                else:
                    self._damage(ev, reason)
                    self.stats.lost += 1
        self._requeue(kept)
        self._reroute_damaged(skip=len(kept))

    def _reroute_damaged(self, skip: int = 0) -> None:
        """Queued events of newly damaged exchanges go the same way (lock held)."""
        if not self._damaged:
            self._resolved(self._queue[0][0] - 1 if self._queue else self._ticket)
            return
        entries = list(self._queue)
        self._queue.clear()
        self._pending_bytes = 0
        for index, (ticket, at, event, extra) in enumerate(entries):
            if index >= skip and event.exchange_id in self._damaged:
                admitted = self._admit(event)
                if admitted is None:
                    continue
                event, more = admitted
                extra = more + extra
            self._queue.append((ticket, at, event, extra))
            self._pending_bytes += _size(event)
        self._resolved(self._queue[0][0] - 1 if self._queue else self._ticket)

    def _resolved(self, ticket: int) -> None:
        self._done_ticket = max(self._done_ticket, ticket)
        self._inflight_at = 0.0
        self._commit_started = 0.0
        self._evaluate(time.monotonic())
        self._done.wake()

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self._done_ticket)

    def _probe(self) -> bool:
        try:
            with driver_call():
                self.store.last_position()
        except Exception:
            return False
        return True

    def _give_up(self) -> None:
        lost = sum(1 + len(entry[3]) for entry in self._queue)
        self.stats.lost += lost
        log.error("codetape: the store stayed unavailable; %d event(s) were not stored", lost)
        self._queue.clear()
        self._pending_bytes = 0
        self._damaged.clear()

    def _flush_leftover_damage(self) -> None:
        """Gaps of exchanges that never ended, written if the store still takes them."""
        if not self._damaged or self._state == "failing":
            return
        gaps = [self._gap_event(xid, d) for xid, d in self._damaged.items()]
        self._damaged.clear()
        try:
            self.store.append(gaps)
        except Exception as exc:
            log.error("codetape: could not record %d capture gap(s): %s", len(gaps), exc)
            return
        self.stats.stored += len(gaps)


def _encodable(*events: Event) -> bool:
    """Whether the store can encode ``events`` (their meta as JSON, their payload as bytes)."""
    try:
        for event in events:
            if event.meta:
                canonical_json(dict(event.meta))
            if not isinstance(event.payload, bytes) or not isinstance(event.kind, EventKind):
                return False
    except (TypeError, ValueError, RecursionError):
        return False
    return True

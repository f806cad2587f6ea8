"""The background writer: group commit off the hot path, and honest accounting of losses.

Guarantees:

* :meth:`Writer.submit` never touches the database: it puts the event on an
  in-memory queue and returns. One writer thread takes what has queued and
  appends it with one :meth:`~recorder.store.store.EventStore.append` (one
  transaction), so a stream of N events costs about N / batch commits, never N.
* **Durability window.** A batch is committed at most ``flush_interval``
  (default 50 ms) after its first event was submitted, plus the time of the
  commit itself. A process killed with SIGKILL therefore loses only the
  events submitted in the last ``flush_interval`` + one commit: under 200 ms
  on a healthy store (tested with a real ``kill -9``).
* **Order.** Events are appended in submission order, so each exchange's
  events keep their order and ``seq`` stays dense.
* **Bounded memory.** When the store is healthy but slower than the stream,
  :meth:`Writer.submit` waits (at most a second at a time) once more than
  ``backpressure_bytes`` are queued, so memory stays flat however long the
  stream; a failing store never blocks the caller.
* **Store failures never reach the caller.** When an append fails the writer
  probes the store. If the store cannot be reached, the batch is kept and
  retried (up to ``max_pending_bytes`` queued; beyond that, new events are
  dropped). If the store is reachable but refuses the write (disk full, a
  constraint), the batch's body events are dropped. Either way a damaged
  exchange keeps a valid shape: its events stop at the first lost one, its
  ``exchange_end`` still lands (renumbered to follow the last stored event,
  with ``capture_gap`` details), and a session-level ``capture_gap`` event
  says what was lost once the store takes writes again. Session-level events
  are never dropped while the writer runs.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recorder.events import Event, EventKind
from recorder.store.store import EventStore

__all__ = ["Writer", "WriterStats"]

log = logging.getLogger("codetape.capture")

DEFAULT_FLUSH_INTERVAL = 0.05
DEFAULT_MAX_BATCH = 500
DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
DEFAULT_BACKPRESSURE_BYTES = 2 * 1024 * 1024
_BACKPRESSURE_WAIT = 1.0


@dataclass(slots=True)
class WriterStats:
    """Counters a user (or a test) can read at any time."""

    submitted: int = 0
    stored: int = 0
    lost: int = 0
    commits: int = 0
    store_errors: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class _Damage:
    """An exchange that lost events: everything from ``first_lost_seq`` on."""

    session_id: str
    first_lost_seq: int
    reason: str
    lost: int = 0
    request: dict[str, Any] | None = None


@dataclass(slots=True)
class _Queued:
    ticket: int
    event: Event
    # A tuple default, not a list factory: one _Queued is built per event.
    extra: tuple[Event, ...] = ()


def _size(event: Event) -> int:
    # Payload plus a flat estimate of the event object itself, so a flood of
    # tiny events counts too.
    return len(event.payload) + 256


_live: weakref.WeakSet[Writer] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # A daemon writer thread dies with the interpreter: flush what is queued first.
    for writer in list(_live):
        writer.close(timeout=5.0)


class Writer:
    """Appends submitted events to ``store`` in the background, in order, in batches."""

    def __init__(
        self,
        store: EventStore,
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        backpressure_bytes: int = DEFAULT_BACKPRESSURE_BYTES,
        retry_interval: float = 0.1,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "codetape-writer",
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_pending_bytes = max_pending_bytes
        self.backpressure_bytes = backpressure_bytes
        self.retry_interval = retry_interval
        self._on_error = on_error
        self.stats = WriterStats()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._done = threading.Condition(self._lock)
        self._queue: deque[_Queued] = deque()
        self._pending_bytes = 0
        self._first_at = 0.0
        self._ticket = 0
        self._done_ticket = 0
        self._urgent = False
        self._closing = False
        self._close_deadline = 0.0
        self._closed = False
        self._failing = False
        self._damaged: dict[str, _Damage] = {}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _live.add(self)

    # -- producer side (any thread) ------------------------------------------

    def submit(self, event: Event) -> bool:
        """Queue ``event``; False when it was dropped (see the module docstring)."""
        # Called once per recorded event on the client's thread: kept lean
        # (_size and _admit's common case inlined).
        with self._lock:
            self.stats.submitted += 1
            if self._closing:
                self.stats.lost += 1
                return False
            xid = event.exchange_id
            size = len(event.payload) + 256
            queue = self._queue
            if (
                xid is not None
                and queue
                and self._pending_bytes + size > self.max_pending_bytes
                and event.kind is not EventKind.EXCHANGE_END
                and xid not in self._damaged
            ):
                self._damage(event, "the store fell behind: too many events pending")
                self.stats.lost += 1
                return False
            if self._damaged:
                queued = self._admit(self._ticket + 1, event)
                if queued is None:
                    return False
                size = _size(queued.event)
            else:
                queued = _Queued(self._ticket + 1, event)
            self._ticket += 1
            if not queue:
                self._first_at = time.monotonic()
                self._work.notify()
            queue.append(queued)
            self._pending_bytes += size
            if len(queue) == self.max_batch:
                self._work.notify()
            if self._pending_bytes > self.backpressure_bytes:
                self._wait_for_room()
        return True

    def _wait_for_room(self) -> None:
        """A healthy store that is slower than the stream: let the writer catch up.

        Bounds memory (no whole-stream buffering) at the price of slowing the
        producer, only while the store is up; a failing store never blocks it.
        """
        self._urgent = True
        self._work.notify()
        deadline = time.monotonic() + _BACKPRESSURE_WAIT
        while (
            self._pending_bytes > self.backpressure_bytes // 2
            and not self._failing
            and not self._closing
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._done.wait(remaining)

    def abandon(self, event: Event, reason: str) -> None:
        """Record that ``event`` (and the rest of its exchange) will not be stored."""
        with self._lock:
            self.stats.submitted += 1
            self.stats.lost += 1
            if event.exchange_id is not None:
                self._damage(event, reason)

    def flush(self, timeout: float | None = None, *, fail_fast: bool = False) -> bool:
        """Wait until everything submitted so far is resolved; True if nothing is pending.

        ``fail_fast`` stops waiting (False) as soon as the store is failing.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._ticket
            self._urgent = True
            self._work.notify()
            while self._done_ticket < target and self._thread.is_alive():
                if fail_fast and self._failing:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._done.wait(remaining)
            return self._done_ticket >= target

    @property
    def failing(self) -> bool:
        """True while the store refuses or cannot take writes."""
        return self._failing

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued (retrying a failing store up to ``timeout``), then stop."""
        with self._lock:
            if self._closed:
                return
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout
            self._work.notify()
        self._thread.join(timeout + 5.0)
        with self._lock:
            self._closed = True
        _live.discard(self)

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

    def _admit(self, ticket: int, event: Event) -> _Queued | None:
        """The queue entry for ``event``, or None if its exchange already lost events."""
        xid = event.exchange_id
        damage = None if xid is None else self._damaged.get(xid)
        if xid is None or damage is None:
            return _Queued(ticket, event)
        if event.kind is not EventKind.EXCHANGE_END:
            damage.lost += 1
            self.stats.lost += 1
            return None
        del self._damaged[xid]
        gap = self._gap_event(xid, damage)
        if damage.first_lost_seq == 0:
            # The request itself was lost: the exchange is absent, only the gap says so.
            self.stats.lost += 1
            return _Queued(ticket, gap)
        meta = dict(event.meta)
        meta["capture_gap"] = {"lost_events": damage.lost, "reason": damage.reason}
        end = dataclasses.replace(event, seq=damage.first_lost_seq, meta=meta)
        return _Queued(ticket, end, (gap,))

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
        while True:
            with self._lock:
                batch = self._take_batch()
                if batch is None:
                    break
            if batch:
                self._commit(batch)
        with self._lock:
            self._flush_leftover_damage()
            self._done_ticket = self._ticket
            self._done.notify_all()

    def _take_batch(self) -> list[_Queued] | None:
        """Wait for work and linger for the group commit; None when it is time to stop."""
        while not self._queue and not self._closing:
            self._work.wait()
        if not self._queue:
            return None
        if self._failing:
            if self._closing and time.monotonic() > self._close_deadline:
                self._give_up()
                return None
            self._work.wait(self.retry_interval)
        else:
            deadline = self._first_at + self.flush_interval
            while len(self._queue) < self.max_batch and not self._urgent and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._work.wait(remaining)
        batch: list[_Queued] = []
        size = 0
        while self._queue and len(batch) < self.max_batch:
            item = self._queue.popleft()
            size += _size(item.event)
            batch.append(item)
        self._pending_bytes -= size
        if self._queue:
            self._first_at = time.monotonic()
        else:
            self._urgent = False
        return batch

    def _commit(self, batch: list[_Queued]) -> None:
        events: list[Event] = []
        add = events.append
        for item in batch:
            add(item.event)
            if item.extra:
                events.extend(item.extra)
        try:
            self.store.append(events)
        except Exception as exc:
            self._failed(batch, exc)
            return
        with self._lock:
            if self._failing:
                log.warning("codetape: the store takes writes again")
            self._failing = False
            self.stats.commits += 1
            self.stats.stored += len(events)
            self._resolved(batch[-1].ticket)

    def _failed(self, batch: list[_Queued], exc: Exception) -> None:
        reachable = self._probe()
        with self._lock:
            self.stats.store_errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            if not self._failing:
                log.warning("codetape: could not store events (%s)", self.stats.last_error)
            self._failing = True
            if not reachable:
                # Keep the batch, in order, in front of what queued meanwhile.
                for item in reversed(batch):
                    self._queue.appendleft(item)
                    self._pending_bytes += _size(item.event)
            else:
                self._refused(batch, f"the store refused the write: {self.stats.last_error}")
            self._done.notify_all()
        if self._on_error is not None:
            self._on_error(exc)

    def _refused(self, batch: list[_Queued], reason: str) -> None:
        """Drop the batch's body events; keep session events and exchange ends, renumbered."""
        kept: list[_Queued] = []
        for item in batch:
            for ev in (item.event, *item.extra):
                if ev.exchange_id is None or ev.kind is EventKind.EXCHANGE_END:
                    again = self._admit(item.ticket, ev)
                    if again is not None:
                        kept.append(again)
                else:
                    self._damage(ev, reason)
                    self.stats.lost += 1
        # Events of the newly damaged exchanges that queued meanwhile go the same way.
        rest = list(self._queue)
        self._queue.clear()
        self._pending_bytes = 0
        for item in kept:
            self._queue.append(item)
            self._pending_bytes += _size(item.event)
        for item in rest:
            again = self._admit(item.ticket, item.event)
            if again is not None:
                again.extra += item.extra
                self._queue.append(again)
                self._pending_bytes += _size(again.event)
        self._resolved(self._queue[0].ticket - 1 if self._queue else self._ticket)

    def _resolved(self, ticket: int) -> None:
        self._done_ticket = max(self._done_ticket, ticket)
        self._done.notify_all()

    def _probe(self) -> bool:
        try:
            self.store.last_position()
        except Exception:
            return False
        return True

    def _give_up(self) -> None:
        lost = sum(1 + len(item.extra) for item in self._queue)
        self.stats.lost += lost
        log.error("codetape: the store stayed unavailable; %d event(s) were not stored", lost)
        self._queue.clear()
        self._pending_bytes = 0
        self._damaged.clear()

    def _flush_leftover_damage(self) -> None:
        """Gaps of exchanges that never ended, written if the store still takes them."""
        if not self._damaged or self._failing:
            return
        gaps = [self._gap_event(xid, d) for xid, d in self._damaged.items()]
        self._damaged.clear()
        try:
            self.store.append(gaps)
        except Exception as exc:
            log.error("codetape: could not record %d capture gap(s): %s", len(gaps), exc)
            return
        self.stats.stored += len(gaps)

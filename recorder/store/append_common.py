"""What the appends of both backends share: hooks, sequence numbers, lock waits.

Guarantees:

* **Checks under the lock.** :meth:`Batch.hooked` runs the store's ``guard``,
  then the append's ``prepare`` (see :data:`Prepare`), on the append's
  connection once the write lock is held, so what they read and decide
  cannot change before the batch commits; their ``on_commit`` callbacks are
  collected for the caller to run only once it has.
* **Dense sequences.** An event without a seq gets its stream's next one
  (:func:`next_seqs`, :func:`seq_of`), read under the write lock.
* **Lock waits visible.** :class:`LockWaits` says since when a thread has
  been waiting for a lock another transaction holds, while it waits and
  never after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from recorder.events import Event

__all__ = ["Batch", "Committed", "LockWaits", "Prepare", "next_seqs", "seq_of", "text_or"]

log = logging.getLogger("codetape.store")

Committed = Callable[[list[int]], None]
Prepare = Callable[[sa.Connection, list[Event], int], tuple[list[Event], Committed | None]]
"""A hook run inside an append's transaction, under the write lock.

It gets the connection, the batch and the log's last position before the
batch, and returns the batch to append (the same, changed, or empty) and a
callback to run, with the positions given to the batch, once the transaction
has committed (or None). It may read and write other tables on the
connection, never ``events`` itself (it returns events to append instead).
"""


def seq_of(ev: Event, next_seq: dict[str, int]) -> int:
    """The seq ``ev`` is appended with: its own, else its stream's next in ``next_seq``.

    ``next_seq`` (see :func:`next_seqs`; empty when every event
    of the batch brings its seq) moves past the seq given.
    """
    seq = ev.seq
    if seq is None:
        seq = next_seq[ev.stream_id]
        next_seq[ev.stream_id] = seq + 1
    elif next_seq:
        next_seq[ev.stream_id] = seq + 1
    return seq


def next_seqs(conn: sa.Connection, items: list[Event]) -> dict[str, int]:
    """Next free seq for each stream that has an event asking for one."""
    wanted = {ev.stream_id: ev for ev in items if ev.seq is None}
    result: dict[str, int] = {}
    for stream_id, ev in wanted.items():
        if ev.exchange_id is not None:
            query = (
                "SELECT max(e.seq) FROM events e JOIN exchanges x ON x.id = e.exchange_key "
                "WHERE x.public_id = :s AND e.exchange_key IS NOT NULL"
            )
        else:
            query = (
                "SELECT max(e.seq) FROM events e JOIN sessions s ON s.id = e.session_key "
                "WHERE s.public_id = :s AND e.exchange_key IS NULL"
            )
        current = conn.execute(sa.text(query), {"s": stream_id}).scalar()
        result[stream_id] = 0 if current is None else int(current) + 1
    return result


@dataclass(slots=True)
class Batch:
    """One append: its events, the hooks that may rewrite them, how payloads are stored."""

    items: list[Event]
    guard: Prepare | None
    """The store's own check (see :attr:`~recorder.store.store.EventStore.guard`)."""
    prepare: Prepare | None
    """The caller's check, run after the guard."""
    codec: int | None
    """The payload codec (see :mod:`recorder.store.codec`); None: stored as given."""
    committed: list[Committed] = field(default_factory=list)
    """What the hooks asked to run once the transaction has committed."""

    def hooked(self, conn: sa.Connection, last: Sequence[Any] | None) -> list[Event]:
        """The events as the guard, then ``prepare``, leave them (under the write lock)."""
        items = self.items
        # The guard checks the batch as the caller gave it; prepare, the
        # caller's own check, comes last and is appended as it returns.
        for hook in (self.guard, self.prepare):
            if hook is not None and (items or hook is self.prepare):
                items, on_commit = hook(conn, items, 0 if last is None else last[0])
                if on_commit is not None:
                    self.committed.append(on_commit)
        return items


def text_or(make: Callable[..., str], *values: Any) -> str:
    """``make(*values)``, or "" when a value is not a str or None (see hashing.texts)."""
    try:
        return make(*values)
    except TypeError:
        return ""


class LockWaits:
    """Which threads are waiting for a lock, and since when (``time.monotonic()``)."""

    def __init__(self) -> None:
        self._since: dict[int, float] = {}
        # Thread id -> (the process that set it, what to call when it starts waiting).
        self._listeners: dict[int, tuple[int, Callable[[], None]]] = {}

    def on_wait(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` in this thread whenever it starts waiting; None: no more."""
        me = threading.get_ident()
        if callback is None:
            self._listeners.pop(me, None)
        else:
            self._listeners[me] = (os.getpid(), callback)

    def since(self, thread_id: int | None) -> float | None:
        """Since when thread ``thread_id`` has been waiting, or None if it is not."""
        return None if thread_id is None else self._since.get(thread_id)

    @contextlib.contextmanager
    def waiting(self, since: float | None = None) -> Iterator[None]:
        """Marks this thread as waiting for locks (from ``since``, else now), for :meth:`since`."""
        waits, me = self._since, threading.get_ident()
        waits[me] = time.monotonic() if since is None else since
        listener = self._listeners.get(me)
        # Not one a thread of the parent set before a fork (its ident may be reused).
        if listener is not None and listener[0] == os.getpid():
            try:
                listener[1]()
            except Exception:  # the listener's bug must not fail the append
                log.exception("codetape: a lock-wait listener failed")
        try:
            yield
        finally:
            del waits[me]

"""The one seam of capture: a *sink* takes a session's events and gets them stored.

A :class:`~recorder.capture.session.CaptureSession` and its exchanges build
events; a sink takes them, and the session does not know which sink it has:

* ``writer="thread"``: a :class:`~recorder.writer.Writer`, a group-commit
  thread in this process;
* ``writer="process"``: a :class:`~recorder.capture.child.ProcessSink`,
  which pipes the events to this process's recorder child, where a
  :class:`~recorder.writer.Writer` stores them (see :mod:`recorder.capture.child`).

Either way the component that writes a session's events is a
:class:`SessionWriter` made by :func:`open_writer` and ended by
:func:`close_writer`, in the process that writes: it holds the session's
lease (:mod:`recorder.lease`) from the ``session_open`` on, and releases it
once the ``session_close`` is stored.

Guarantees every sink gives (tested on both): :meth:`Sink.submit` never
blocks; :attr:`Sink.congested` asks the producer to wait between chunks,
with :meth:`Sink.wait_for_room` or ``await`` :meth:`Sink.wait_for_room_async`;
a busy store delays, a failing one loses and counts; :meth:`Sink.forked`
makes a forked child's copy record on its own.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

from recorder.errors import CodetapeError
from recorder.events import Event
from recorder.lease import HeldLease, lease_keeper
from recorder.repair import repair_dead_writers
from recorder.store.forkgate import driver_call
from recorder.store.store import EventStore
from recorder.writer import Writer, WriterStats

__all__ = [
    "CaptureError",
    "SessionWriter",
    "Sink",
    "close_writer",
    "open_writer",
    "writer_options",
]

log = logging.getLogger("codetape.capture")

# The Writer options a session may set (and a process sink passes to its child).
_WRITER_OPTIONS = ("flush_interval", "max_lag", "stall_after", "max_pending_bytes")


class CaptureError(CodetapeError):
    """The store failed while ``on_store_error="raise"``: the call is stopped, unaudited."""


class Sink(Protocol):
    """What a session hands its events to."""

    congested: bool
    """True when producers should wait before the next chunk (read without a lock)."""

    def submit(self, event: Event) -> bool:
        """Take ``event``; False when it was dropped. Never blocks."""
        ...

    def abandon(self, event: Event, reason: str) -> None:
        """``event`` and the rest of its exchange will not be stored (a recorder failure)."""
        ...

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block this thread until producers may go on (False: ``timeout`` passed first)."""
        ...

    async def wait_for_room_async(self) -> None:
        """Await until producers may go on, never blocking the event loop."""
        ...

    def flush(self, timeout: float | None = None, *, fail_fast: bool = False) -> bool:
        """Wait until everything submitted is stored or dropped; True when nothing is pending."""
        ...

    @property
    def failing(self) -> bool:
        """True while the store cannot take the events."""
        ...

    def current_stats(self) -> WriterStats:
        """What the sink stored and lost so far."""
        ...

    def forked(self) -> None:
        """In a forked child: record this process's events on its own from now on."""
        ...

    def close(self, timeout: float = 10.0, *, session_closed: bool = False) -> None:
        """Store what was submitted (waiting at most about ``timeout``), then stop.

        ``session_closed``: the last event was the ``session_close`` (the
        session's lease is then released; otherwise it is left to expire).
        """
        ...


def writer_options(options: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~recorder.writer.Writer` options among a session's ``options``."""
    return {k: v for k, v in options.items() if k in _WRITER_OPTIONS and v is not None}


class SessionWriter(Writer):
    """The writer of one session's events, and the lease it holds while it writes them."""

    def __init__(
        self,
        store: EventStore,
        session_id: str,
        *,
        take_over: bool = False,
        identity: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(store, name=f"codetape-writer-{session_id[:8]}", **options)
        self._release_when_done = False
        # The lease hook: the lease is taken in the transaction that stores the
        # session_open (or, for a writer replacing a dead one, taken over by its
        # first append), renewed by this process, which writes the session's
        # events, and released by close_writer once the session_close is stored.
        self.lease: HeldLease | None = lease_keeper(store, identity=identity).hold(
            session_id, take_over=take_over
        )

    def current_stats(self) -> WriterStats:
        stats = super().current_stats()
        if self.lease is not None:
            # Events the lease fence dropped (a repair closed their session
            # while this recorder was stopped) went through the writer as stored.
            fenced = self.lease.lost_events
            stats.stored -= fenced
            stats.lost += fenced
        return stats

    def close(self, timeout: float = 10.0, *, session_closed: bool = False) -> None:
        self._release_when_done = session_closed
        super().close(timeout)
        if not self.running:
            self._release()
        # Else the store was still locked when the wait ran out: the thread goes
        # on and releases the lease when it ends. Released now, the lease would
        # let a repair close the session while its events are still on the way,
        # and the two would then clash in the log.

    def _finished(self) -> None:
        if self._release_when_done:
            with driver_call():  # a background thread's statement: see recorder.store.forkgate
                self._release()

    def _release(self) -> None:
        if self._release_when_done and self.lease is not None:
            self.lease.release()  # idempotent; its count of fenced events stays readable

    def forked(self) -> None:
        if self._pid != os.getpid():
            self.lease = None  # the parent's: a fork holds nothing (see recorder.lease)
        super().forked()


def open_writer(
    store: EventStore,
    session_id: str,
    *,
    repair_dead: bool = True,
    take_over: bool = False,
    identity: dict[str, Any] | None = None,
    on_progress: Any = None,
    **options: Any,
) -> SessionWriter:
    """The writer of session ``session_id``'s events, in the process that writes them.

    ``repair_dead`` first closes what dead recorders left open in ``store``
    (housekeeping: its failure never stops the recording). ``take_over``: the
    session is in the log already and this writer replaces a dead one.
    """
    if repair_dead:
        try:
            repair_dead_writers(store)
        except Exception as exc:
            log.warning("codetape: could not repair sessions of dead recorders: %s", exc)
    return SessionWriter(
        store,
        session_id,
        take_over=take_over,
        identity=identity,
        on_progress=on_progress,
        **options,
    )


def close_writer(
    writer: SessionWriter, timeout: float = 10.0, *, session_closed: bool = False
) -> WriterStats:
    """Store what ``writer`` holds and stop it; its final counters.

    ``session_closed``: its ``session_close`` was the last event, so its lease
    is released; otherwise (the session stays open) the lease is left to expire.
    """
    writer.close(timeout, session_closed=session_closed)
    return writer.current_stats()

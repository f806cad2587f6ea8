"""The one seam of capture: a *sink* takes a session's events and gets them stored.

A :class:`~recorder.capture.session.CaptureSession` and its exchanges build
events; a sink takes them, and the session does not know which sink it has:

* ``writer="thread"``: a :class:`~recorder.writer.Writer`, a group-commit
  thread in this process;
* ``writer="process"``: a :class:`~recorder.capture.child.ProcessSink`,
  which pipes the events to this process's recorder child, where a
  :class:`~recorder.writer.Writer` stores them (see :mod:`recorder.capture.child`).

Either way the component that writes a session's events is a
:class:`~recorder.writer.Writer` made by :func:`open_writer` and ended by
:func:`close_writer`, in the process that writes: whatever a session must
hold while it is being written (its lease) is held between those two calls.

Guarantees every sink gives (tested on both): :meth:`Sink.submit` never
blocks; :attr:`Sink.congested` asks the producer to wait between chunks,
with :meth:`Sink.wait_for_room` or ``await`` :meth:`Sink.wait_for_room_async`;
a busy store delays, a failing one loses and counts; :meth:`Sink.forked`
makes a forked child's copy record on its own.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from recorder.errors import CodetapeError
from recorder.events import Event
from recorder.repair import repair_dead_writers
from recorder.store.store import EventStore
from recorder.writer import Writer, WriterStats

__all__ = ["CaptureError", "Sink", "close_writer", "open_writer", "writer_options"]

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

    def close(self, timeout: float = 10.0) -> None:
        """Store what was submitted (waiting at most about ``timeout``), then stop."""
        ...


def writer_options(options: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~recorder.writer.Writer` options among a session's ``options``."""
    return {k: v for k, v in options.items() if k in _WRITER_OPTIONS and v is not None}


def open_writer(
    store: EventStore,
    session_id: str,
    *,
    repair_dead: bool = True,
    on_progress: Any = None,
    **options: Any,
) -> Writer:
    """The writer of session ``session_id``'s events, in the process that writes them.

    ``repair_dead`` first closes what dead recorders left open in ``store``
    (housekeeping: its failure never stops the recording).
    """
    if repair_dead:
        try:
            repair_dead_writers(store)
        except Exception as exc:
            log.warning("codetape: could not repair sessions of dead recorders: %s", exc)
    return Writer(
        store, name=f"codetape-writer-{session_id[:8]}", on_progress=on_progress, **options
    )


def close_writer(writer: Writer, timeout: float = 10.0) -> WriterStats:
    """Store what ``writer`` holds and stop it; its final counters."""
    writer.close(timeout)
    return writer.current_stats()

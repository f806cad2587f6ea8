"""A recording session: its events, its exchanges, and the sink that stores them.

Design in one paragraph: a :class:`CaptureSession` and the
:class:`~recorder.capture.exchange.ExchangeRecorder` of each of its
exchanges build events (the same builders as imports); a *sink*
(:mod:`recorder.capture.sink`) takes them and gets them stored, in a writer
thread of this process (``writer="thread"``) or in this process's recorder
child (``writer="process"``). The session never knows which: both take
events, never block the producer, ask it to wait when the store falls
behind, and count what they lose.

Guarantees:

* Labels and metadata are checked when the session opens: a value that is
  not JSON is a :class:`BadMetadata` (a ``ValueError``) naming its key,
  raised before anything is recorded. The name, label values and metadata
  are stored redacted (:func:`~recorder.capture.build.session_open_meta`):
  an endpoint URL without its user info or secret query values.
* Fork-safe: a session opened before ``os.fork`` (``multiprocessing``,
  gunicorn ``--preload``, Celery prefork) records the forked child's
  exchanges too, through a sink of the child's own; the child never writes
  the parent's queued events, never closes the session (its opener does),
  and drains its sink when it exits.
* Every exchange ends with exactly one ``exchange_end``; one still open when
  the session closes ends as interrupted.
* Bounded memory per exchange: ``max_event_bytes`` bounds what one exchange's
  recorder holds to build one event (an SSE frame, a JSON body kept whole to
  be redacted), ``max_decoded_bytes`` how far a compressed body is decoded
  for the log; an exchange past either stops being recorded, as a capture
  gap counted in :attr:`CaptureStats.exchanges_over_limit` (see
  :mod:`recorder.capture.exchange`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from recorder.capture.build import session_open_meta
from recorder.capture.exchange import ExchangeRecorder
from recorder.capture.sink import CaptureError, Sink, open_writer, writer_options
from recorder.config import resolve_url
from recorder.errors import CodetapeError
from recorder.events import Event, EventKind, new_id
from recorder.redact import Redactor
from recorder.repair import writer_identity
from recorder.store.engine import is_process_local
from recorder.store.store import EventStore
from recorder.writer import DEFAULT_MAX_PENDING_BYTES

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_EVENT_BYTES",
    "BadMetadata",
    "CaptureError",
    "CaptureSession",
    "CaptureStats",
    "OnStoreError",
    "WriterMode",
    "session_for",
]

log = logging.getLogger("codetape.capture")

OnStoreError = Literal["log", "raise"]
_ON_STORE_ERROR = ("log", "raise")
WriterMode = Literal["auto", "thread", "process"]
_WRITER_MODES = ("auto", "thread", "process")
_SYNC_TIMEOUT = 30.0
# The largest event the recorder holds whole. Above any real Responses API
# event: the largest are frames that carry generated images in base64 (a
# `response.completed` with several of them runs to a few MiB).
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
# How far one compressed body is decoded for the log: far above what the API
# compresses (JSON bodies), far below what a small "compression bomb" expands to.
DEFAULT_MAX_DECODED_BYTES = 256 * 1024 * 1024


class BadMetadata(CodetapeError, ValueError):
    """A label or metadata value that cannot be recorded; the message names its key."""


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """What a session recorded and lost so far."""

    exchanges: int
    open_exchanges: int
    events_submitted: int
    events_stored: int
    events_lost: int
    commits: int
    store_errors: int
    recorder_errors: int
    last_error: str | None
    exchanges_over_limit: int = 0
    """Exchanges whose recording stopped at ``max_event_bytes`` or ``max_decoded_bytes``."""


class CaptureSession:
    """One recording session in ``store``: opened on creation, closed by :meth:`close`.

    ``store`` is an :class:`EventStore` (left open on close) or a database URL
    (opened here and closed with the session). ``labels`` (str to str) and
    ``metadata`` (JSON values) describe the session. ``redact_headers`` and
    ``redact_json_paths`` add to the default redaction (see
    :class:`~recorder.redact.Redactor`).

    ``writer`` chooses the sink: ``"thread"`` (what ``"auto"``, the default,
    means) stores through a writer thread of this process: the least CPU in
    all, and the shortest wall time when no core is idle; ``"process"``
    through this process's recorder child (see :mod:`recorder.capture.child`),
    so the client's thread only builds events and the hashing and inserts run
    on another core, if one is free: more CPU in all, less on the client.

    ``flush_interval``: the longest an event waits for its group commit
    (default: 50 ms in a writer thread; 250 ms in the recorder child, which
    stores whatever reached it even if this process dies, so its commits can
    be fewer and larger).

    ``max_event_bytes`` (default 16 MiB): the most one exchange holds to
    build one event, an SSE frame not yet ended or a JSON body kept whole to
    be redacted; ``max_decoded_bytes`` (default 256 MiB): the most a
    compressed body is decoded to for the log. Past either, the exchange's
    recording stops as a capture gap (the client still gets the response;
    strict mode raises :class:`CaptureError`).
    """

    def __init__(
        self,
        store: EventStore | str | None = None,
        name: str = "capture",
        *,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        redactor: Redactor | None = None,
        redact_headers: Iterable[str] = (),
        redact_json_paths: Iterable[str] = (),
        on_store_error: OnStoreError = "log",
        flush_interval: float | None = None,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        repair_dead: bool = True,
        writer: WriterMode = "auto",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    ) -> None:
        for option, value in (
            ("max_event_bytes", max_event_bytes),
            ("max_decoded_bytes", max_decoded_bytes),
        ):
            if value < 1:
                raise ValueError(f"{option} must be >= 1, got {value}")
        self.max_event_bytes = max_event_bytes
        self.max_decoded_bytes = max_decoded_bytes
        if writer not in _WRITER_MODES:
            raise CodetapeError(f"writer must be one of {', '.join(_WRITER_MODES)}, not {writer!r}")
        if on_store_error not in _ON_STORE_ERROR:
            raise CodetapeError(
                f"on_store_error must be one of {', '.join(_ON_STORE_ERROR)}, "
                f"not {on_store_error!r}"
            )
        checked_labels = check_labels(labels)
        checked_metadata = check_metadata(metadata)
        self.strict = on_store_error == "raise"
        self.name = name
        self.id = new_id()
        self.redactor = redactor or Redactor.with_extra(redact_headers, redact_json_paths)
        url = store.url if isinstance(store, EventStore) else resolve_url(store)
        self.url = url
        """The database recorded into."""
        self._owns_store = not isinstance(store, EventStore)
        self._store = store if isinstance(store, EventStore) else None
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._inherited = False  # a forked child's copy: the opener closes the session
        self._open: dict[str, ExchangeRecorder] = {}
        self._exchanges = 0
        self._recorder_errors = 0
        self._over_limits = 0
        options = {"flush_interval": flush_interval, "max_pending_bytes": max_pending_bytes}
        identity = writer_identity()
        self.sink: Sink
        if _writer_mode(writer, url) == "process":
            from recorder.capture.child import ProcessSink

            process_sink = ProcessSink(url, self.id, repair_dead=repair_dead, options=options)
            identity["writer"] = process_sink.writer_identity
            self.sink = process_sink
        else:
            self.sink = open_writer(
                self.store,
                self.id,
                repair_dead=repair_dead,
                identity=identity,
                **writer_options(options),
            )
        # What the user gave (an endpoint URL, a setting) is redacted before it is
        # stored; the recorder's own identity is added after, as it is.
        opened = session_open_meta(
            {"name": name, "labels": checked_labels, "metadata": checked_metadata}, self.redactor
        )
        opened["metadata"]["recorder"] = identity
        try:
            self.sink.submit(
                Event(
                    self.id,
                    EventKind.SESSION_OPEN,
                    0,
                    meta=opened,
                )
            )
            if self.strict:
                self.sync("opening the session")
        except BaseException:
            # Refused at open: nobody will close this session, so its sink
            # stops now rather than retrying the opening at interpreter exit,
            # and a store opened here for it is closed.
            self.sink.close(timeout=0)
            if self._owns_store and self._store is not None:
                self._store.close()
            raise

    @property
    def store(self) -> EventStore:
        """The store recorded into (opened here on first use when given a URL)."""
        if self._store is None:
            self._store = EventStore.open(self.url)
        return self._store

    # -- used by the transports ----------------------------------------------

    def exchange(self) -> ExchangeRecorder:
        """A recorder for one new exchange (call :meth:`ExchangeRecorder.start` next)."""
        if self._closed:
            raise CodetapeError(f"the capture session {self.name!r} is closed")
        if self._pid != os.getpid():
            self.forked()
        if self.strict and self.sink.failing:
            raise CaptureError(self._failure_message("starting a request"))
        return ExchangeRecorder(self)

    def sync(self, what: str) -> None:
        """Strict mode: wait until everything submitted is stored, else raise."""
        stored = self.sink.flush(_SYNC_TIMEOUT, fail_fast=True)
        stats = self.sink.current_stats()
        if not stored or stats.store_errors or stats.lost:
            raise CaptureError(self._failure_message(what))

    def _failure_message(self, what: str) -> str:
        error = self.sink.current_stats().last_error or "events were not stored"
        return (
            f"codetape could not store the capture while {what} ({error}); on_store_error='raise'"
        )

    def _opened(self, x: ExchangeRecorder) -> None:
        with self._lock:
            self._open[x.id] = x
            self._exchanges += 1

    def _ended(self, x: ExchangeRecorder) -> None:
        with self._lock:
            self._open.pop(x.id, None)

    def _recorder_error(self, x: ExchangeRecorder, exc: BaseException) -> None:
        with self._lock:
            self._recorder_errors += 1
        log.warning("codetape: recording exchange %s failed: %r", x.id, exc)

    def _over_limit(self, x: ExchangeRecorder, why: str) -> None:
        with self._lock:
            self._over_limits += 1
        log.warning("codetape: recording of exchange %s stopped: %s", x.id, why)

    # -- fork ------------------------------------------------------------------

    def forked(self) -> None:
        """In a forked child: record this process's exchanges through a sink of its own.

        Called by the fork hook, or on the next request where ``os.register_at_fork``
        is missing. The parent's exchanges in flight stay the parent's.
        """
        pid = os.getpid()
        if pid == self._pid:
            return
        self._pid = pid
        self._inherited = True
        self._lock = threading.Lock()
        self._open = {}
        self._exchanges = 0
        self._recorder_errors = 0
        self._over_limits = 0
        self.sink.forked()

    # -- lifecycle -----------------------------------------------------------

    @property
    def stats(self) -> CaptureStats:
        """Counters (in a forked child: of what this process recorded)."""
        w = self.sink.current_stats()
        with self._lock:
            return CaptureStats(
                exchanges=self._exchanges,
                open_exchanges=len(self._open),
                events_submitted=w.submitted,
                events_stored=w.stored,
                events_lost=w.lost,
                commits=w.commits,
                store_errors=w.store_errors,
                recorder_errors=self._recorder_errors + w.recorder_errors,
                last_error=w.last_error,
                exchanges_over_limit=self._over_limits,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted so far is stored (or dropped)."""
        return self.sink.flush(timeout)

    def close(self, reason: str | None = None) -> None:
        """End open exchanges as interrupted, write ``session_close``, drain the sink.

        In a forked child's copy, the child's own exchanges are ended and its
        sink drained; the session stays open for the process that opened it.
        """
        if self._pid != os.getpid():
            self.forked()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            still_open = list(self._open.values())
        for x in still_open:
            x.interrupt("the recording session closed before the response ended")
        if not self._inherited:
            meta: dict[str, Any] = {"reason": reason} if reason else {}
            self.sink.submit(Event(self.id, EventKind.SESSION_CLOSE, None, meta=meta))
        self.sink.close(session_closed=not self._inherited)
        if self._owns_store and self._store is not None:
            self._store.close()

    def __enter__(self) -> CaptureSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(None if exc is None else f"{type(exc).__name__}: {exc}")


def check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """``labels`` as a dict, or :class:`BadMetadata` naming the first label that is not str."""
    result: dict[str, str] = {}
    for key, value in (labels or {}).items():
        if not isinstance(key, str):
            raise BadMetadata(f"label names must be strings, not {type(key).__name__} ({key!r})")
        if not isinstance(value, str):
            raise BadMetadata(f"label {key!r} is a {type(value).__name__}: labels must be strings")
        result[key] = value
    return result


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """``metadata`` as a dict, or :class:`BadMetadata` naming the first value that is not JSON."""
    result = dict(metadata or {})
    for key, value in result.items():
        _check_json(value, key if isinstance(key, str) else repr(key), key)
    return result


def _check_json(value: Any, path: str, key: Any = "") -> None:
    if not isinstance(key, str):
        raise BadMetadata(f"metadata key {path} is a {type(key).__name__}: keys must be strings")
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadMetadata(f"metadata {path!r} is {value}, which JSON cannot hold")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for name, item in value.items():
            _check_json(item, f"{path}.{name}", name)
        return
    raise BadMetadata(
        f"metadata {path!r} is a {type(value).__module__}.{type(value).__qualname__} "
        f"({value!r}): use JSON values (str, int, float, bool, None, lists, dicts)"
    )


def _writer_mode(writer: WriterMode, url: str) -> Literal["thread", "process"]:
    """Which sink a new session gets (see :class:`CaptureSession`)."""
    if writer != "process":
        return "thread"
    if is_process_local(url):
        raise CodetapeError(
            f"writer='process' cannot record into {url}: an in-memory SQLite database "
            "exists in this process only; use writer='thread' or a file"
        )
    return "process"


def session_for(
    store: EventStore | str | None, session: str | CaptureSession, options: dict[str, Any]
) -> tuple[CaptureSession, bool]:
    """The session to record into, and whether the caller owns (must close) it."""
    if isinstance(session, CaptureSession):
        return session, False
    return CaptureSession(store, session, **options), True

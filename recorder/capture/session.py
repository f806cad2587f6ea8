"""A recording session and the recorder of each exchange in it.

Guarantees:

* Transport-neutral: the sync and async transports and the proxy drive an
  :class:`ExchangeRecorder` with plain values (method, URL, headers, body
  chunks), so every way in records the same events.
* Cheap on the hot path: :meth:`ExchangeRecorder.feed` cuts SSE frames with the
  shared :class:`~recorder.sse.SSESplitter` and hands events to the
  :class:`~recorder.writer.Writer`'s queue; it never waits for the database
  (except to hold back a stream that outruns a healthy store, which bounds
  memory; see :mod:`recorder.writer`).
* Never breaks the call (``on_store_error="log"``, the default): a store
  failure, or even a bug in the recorder, is logged and counted and the
  exchange is marked as a capture gap; the bytes still go to the client. With
  ``on_store_error="raise"``, the request is durably stored before it is sent,
  the ending is durably stored before the call returns, and any store failure
  raises :class:`CaptureError` instead.
* Every exchange ends with exactly one ``exchange_end`` carrying its outcome;
  an exchange still open when the session closes ends as interrupted.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx2
from httpx2._decoders import SUPPORTED_DECODERS, ContentDecoder, MultiDecoder

from recorder.capture.build import (
    body_event,
    body_response_id,
    end_event,
    redact_frame,
    request_event,
    response_head_event,
    sse_frame_event,
    unterminated_sse_event,
)
from recorder.config import resolve_url
from recorder.errors import CodetapeError
from recorder.events import Event, EventKind, Outcome, new_id
from recorder.lease import HeldLease, lease_keeper
from recorder.outcome import _TERMINAL, StreamOutcome, outcome_for_body
from recorder.redact import ECHO_TYPES, Redactor
from recorder.repair import repair_dead_writers, writer_identity
from recorder.sse import SSEFrame, SSESplitter
from recorder.store.engine import is_process_local
from recorder.store.store import EventStore
from recorder.writer import DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_PENDING_BYTES, Writer

__all__ = [
    "CaptureError",
    "CaptureSession",
    "CaptureStats",
    "Exchange",
    "ExchangeRecorder",
    "OnStoreError",
    "session_for",
]

if TYPE_CHECKING:
    from recorder.capture.worker import RemoteSession

log = logging.getLogger("codetape.capture")

OnStoreError = Literal["log", "raise"]
_ON_STORE_ERROR = ("log", "raise")
WriterMode = Literal["auto", "thread", "process"]
_WRITER_MODES = ("auto", "thread", "process")

# A non-streamed body is stored in BODY events of at most this size, so a large
# download never sits in memory whole; small JSON bodies stay one event.
BODY_CHUNK = 256 * 1024
# For an error status on a stream, the first bytes are kept to find the API's message.
_ERROR_PREFIX = 64 * 1024
_SYNC_TIMEOUT = 30.0


class Exchange(Protocol):
    """What the transports drive: an :class:`ExchangeRecorder`, or its tap in process mode."""

    id: str

    @property
    def strict(self) -> bool: ...
    @property
    def ended(self) -> bool: ...
    def start(
        self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> None: ...
    def response(self, status: int, headers: list[tuple[str, str]], http_version: str) -> None: ...
    def feed(self, chunk: bytes) -> None: ...
    def already_read(self, content: bytes) -> None: ...
    def finish(self) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def close_early(self) -> None: ...
    def interrupt(self, reason: str) -> None: ...
    def sync_start(self) -> None: ...
    def sync_end(self) -> None: ...


class CaptureError(CodetapeError):
    """The store failed while ``on_store_error="raise"``: the call is stopped, unaudited."""


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


class CaptureSession:
    """One recording session in ``store``: opened on creation, closed by :meth:`close`.

    ``store`` is an :class:`EventStore` (left open on close) or a database URL
    (opened here and closed with the session). ``redact_headers`` and
    ``redact_json_paths`` add to the default redaction (see
    :class:`~recorder.redact.Redactor`).

    ``writer`` says where the recording work (splitting, hashing, inserts)
    runs: ``"process"`` in this process's recorder child (see
    :mod:`recorder.capture.worker`), so the client's thread only taps chunks;
    ``"thread"`` in a writer thread of this process, sharing its GIL;
    ``"auto"`` (the default) picks ``"process"`` unless the store is an
    in-memory SQLite database or a customised :class:`EventStore` subclass,
    which a child process could not open as such.
    """

    def __init__(
        self,
        store: EventStore | str | None = None,
        name: str = "capture",
        *,
        labels: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        redactor: Redactor | None = None,
        redact_headers: Iterable[str] = (),
        redact_json_paths: Iterable[str] = (),
        on_store_error: OnStoreError = "log",
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        repair_dead: bool = True,
        writer: WriterMode = "auto",
        recorder_identity: dict[str, Any] | None = None,
    ) -> None:
        if writer not in _WRITER_MODES:
            raise CodetapeError(f"writer must be one of {', '.join(_WRITER_MODES)}, not {writer!r}")
        if on_store_error not in _ON_STORE_ERROR:
            raise CodetapeError(
                f"on_store_error must be one of {', '.join(_ON_STORE_ERROR)}, "
                f"not {on_store_error!r}"
            )
        self.strict = on_store_error == "raise"
        self.name = name
        self.id = new_id()
        self.redactor = redactor or Redactor.with_extra(redact_headers, redact_json_paths)
        self._lock = threading.Lock()
        self._closed = False
        self._remote: RemoteSession | None = None
        url = store.url if isinstance(store, EventStore) else resolve_url(store)
        self.url = url
        """The database recorded into."""
        self._owns_store = not isinstance(store, EventStore)
        self._store = store if isinstance(store, EventStore) else None
        if _writer_mode(writer, store, url) == "process":
            from recorder.capture.worker import shared_worker

            self._remote = shared_worker().open_session(
                {
                    "url": url,
                    "name": name,
                    "labels": dict(labels or {}),
                    "metadata": dict(metadata or {}),
                    "redactor": self.redactor.to_config(),
                    "on_store_error": on_store_error,
                    "flush_interval": flush_interval,
                    "max_pending_bytes": max_pending_bytes,
                    "repair_dead": repair_dead,
                    "identity": writer_identity(),
                }
            )
            self.id = self._remote.session_id
            return
        self._store = self.store
        self._open: dict[str, ExchangeRecorder] = {}
        self._exchanges = 0
        self._recorder_errors = 0
        if repair_dead:
            self._repair_dead()
        self.writer = Writer(
            self.store,
            flush_interval=flush_interval,
            max_pending_bytes=max_pending_bytes,
            name=f"codetape-writer-{self.id[:8]}",
        )
        meta_data = dict(metadata or {})
        meta_data["recorder"] = recorder_identity or writer_identity()
        # Lease hook: the lease is taken in the transaction that stores the
        # session_open, renewed by this process (the one writing the events)
        # and released by close(); see recorder.lease.
        self._lease: HeldLease | None = lease_keeper(
            self.store, identity=meta_data["recorder"]
        ).hold(self.id)
        self.submit(
            Event(
                self.id,
                EventKind.SESSION_OPEN,
                0,
                meta={"name": name, "labels": dict(labels or {}), "metadata": meta_data},
            )
        )
        if self.strict:
            self.sync("opening the session")

    @property
    def store(self) -> EventStore:
        """The store recorded into (in process mode, opened here on first use, for reading)."""
        if self._store is None:
            self._store = EventStore.open(self.url)
        return self._store

    def _repair_dead(self) -> None:
        # Closing what dead recorders left open is housekeeping: it must never
        # stop a new recording from starting.
        try:
            repair_dead_writers(self.store)
        except Exception as exc:
            log.warning("codetape: could not repair sessions of dead recorders: %s", exc)

    # -- used by the transports ----------------------------------------------

    def exchange(self) -> Exchange:
        """A recorder for one new exchange (call :meth:`ExchangeRecorder.start` next)."""
        if self._closed:
            raise CodetapeError(f"the capture session {self.name!r} is closed")
        if self._remote is not None:
            from recorder.capture.worker import RemoteExchange

            if self.strict and self._remote.failed is not None:
                raise CaptureError(self._failure_message("starting a request"))
            return RemoteExchange(self, self._remote)
        if self.strict and self.writer.stats.store_errors:
            raise CaptureError(self._failure_message("starting a request"))
        return ExchangeRecorder(self)

    def submit(self, event: Event) -> None:
        if not self.writer.submit(event) and self.strict:
            raise CaptureError(self._failure_message("recording"))

    def sync(self, what: str) -> None:
        """Strict mode: wait until everything submitted is stored, else raise."""
        if self._remote is not None:
            stored = self._remote.flush(_SYNC_TIMEOUT, fail_fast=True)
            stats = self._remote.stats
            if not stored or stats.store_errors or stats.events_lost:
                raise CaptureError(self._failure_message(what))
            return
        stored = self.writer.flush(_SYNC_TIMEOUT, fail_fast=True)
        if not stored or self.writer.stats.store_errors or self.stats.events_lost:
            raise CaptureError(self._failure_message(what))

    def _failure_message(self, what: str) -> str:
        error = self.stats.last_error
        if error is None and self._remote is not None:
            error = self._remote.failed
        error = error or "events were not stored"
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

    # -- lifecycle -----------------------------------------------------------

    @property
    def stats(self) -> CaptureStats:
        """Counters; in process mode as the child reports them now (or last did, once closed)."""
        if self._remote is not None:
            return self._remote.stats if self._closed else self._remote.current_stats()
        w = self.writer.stats
        # Events the lease fence dropped (their session was closed by a repair
        # while this recorder was stopped) went through the writer as stored.
        fenced = self._lease.lost_events if self._lease is not None else 0
        with self._lock:
            return CaptureStats(
                exchanges=self._exchanges,
                open_exchanges=len(self._open),
                events_submitted=w.submitted,
                events_stored=w.stored - fenced,
                events_lost=w.lost + fenced,
                commits=w.commits,
                store_errors=w.store_errors,
                recorder_errors=self._recorder_errors,
                last_error=w.last_error,
            )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted so far is stored (or dropped)."""
        if self._remote is not None:
            return self._remote.flush(timeout, fail_fast=False)
        return self.writer.flush(timeout)

    def close(self, reason: str | None = None) -> None:
        """End open exchanges as interrupted, write ``session_close``, drain the writer."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._remote is not None:
            self._remote.close(reason)
            if self._owns_store and self._store is not None:
                self._store.close()
            return
        with self._lock:
            still_open = list(self._open.values())
        for x in still_open:
            x.interrupt("the recording session closed before the response ended")
        meta: dict[str, Any] = {}
        if reason:
            meta["reason"] = reason
        self.writer.submit(Event(self.id, EventKind.SESSION_CLOSE, None, meta=meta))
        self.writer.close()
        if self._lease is not None:
            self._lease.release()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> CaptureSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(None if exc is None else f"{type(exc).__name__}: {exc}")


def _writer_mode(
    writer: WriterMode, store: EventStore | str | None, url: str
) -> Literal["thread", "process"]:
    """Where the recording work of a new session runs (see :class:`CaptureSession`)."""
    if writer == "thread":
        return "thread"
    if is_process_local(url):
        if writer == "process":
            raise CodetapeError(
                f"writer='process' cannot record into {url}: an in-memory SQLite database "
                "exists in this process only; use writer='thread' or a file"
            )
        return "thread"
    if writer == "auto" and isinstance(store, EventStore) and type(store) is not EventStore:
        # A customised store may behave in ways a child opening the URL would not.
        return "thread"
    return "process"


def session_for(
    store: EventStore | str | None, session: str | CaptureSession, options: dict[str, Any]
) -> tuple[CaptureSession, bool]:
    """``session`` itself if it is open already, else a new one named so; and whether it is new."""
    if isinstance(session, CaptureSession):
        return session, False
    return CaptureSession(store, session, **options), True


def _content_decoder(headers: Iterable[tuple[str, str]]) -> tuple[ContentDecoder | None, str]:
    """A decoder for the response's Content-Encoding (as httpx2 would use), and its name."""
    codings: list[str] = []
    for name, value in headers:
        if name.lower() == "content-encoding":
            codings.extend(v.strip().lower() for v in value.split(","))
    codings = [c for c in codings if c and c != "identity"]
    if not codings or any(c not in SUPPORTED_DECODERS for c in codings):
        return None, ",".join(codings)
    return MultiDecoder(codings), ",".join(codings)


def sync_before_sending(session: CaptureSession, fail: Callable[[BaseException], None]) -> None:
    """Strict mode: wait until the request is stored; if it cannot be, end it and raise."""
    try:
        session.sync("sending a request")
    except CaptureError as exc:
        fail(exc)
        raise


def failure_ending(exc: BaseException) -> tuple[Outcome, str, dict[str, Any]]:
    """How an exchange ends when the transport raised ``exc``."""
    if isinstance(exc, CaptureError):
        return Outcome.INTERRUPTED, str(exc), {}
    details: dict[str, Any] = {"error": type(exc).__name__}
    if isinstance(exc, httpx2.TimeoutException):
        details["timeout"] = True
    if isinstance(exc, Exception):
        return Outcome.TRANSPORT_ERROR, f"{type(exc).__name__}: {exc}", details
    # Cancellation, KeyboardInterrupt: the client side stopped the call.
    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Outcome.CLIENT_CLOSED, f"the call was stopped ({why})", details


def early_close(in_flight: BaseException | None) -> tuple[str, dict[str, Any]]:
    """Why the client closed early, given the exception being handled (if any)."""
    if in_flight is not None and not isinstance(in_flight, GeneratorExit | StopIteration):
        reason = f"the client stopped reading on {type(in_flight).__name__}: {in_flight}"
        return reason, {"error": type(in_flight).__name__}
    return "the client closed the response before its end", {}


class ExchangeRecorder:
    """Records one request and its response as they happen (see the module docstring)."""

    __slots__ = (
        "_body",
        "_decoder",
        "_ended",
        "_error_prefix",
        "_response_id",
        "_seq",
        "_session",
        "_splitter",
        "_status",
        "_streamed",
        "_t0",
        "_tracker",
        "_wall0",
        "id",
    )

    def __init__(self, session: CaptureSession) -> None:
        self.id = new_id()
        self._session = session
        self._seq = 0
        self._t0 = 0
        self._wall0 = 0
        self._ended = False
        self._status = 0
        self._streamed = False
        self._splitter = SSESplitter()
        self._tracker = StreamOutcome()
        self._response_id: str | None = None
        self._body = bytearray()
        self._error_prefix = bytearray()
        self._decoder: ContentDecoder | None = None

    @property
    def strict(self) -> bool:
        return self._session.strict

    @property
    def ended(self) -> bool:
        return self._ended

    def _submit(self, event: Event) -> None:
        self._session.submit(event)
        self._seq += 1

    def _guard(self, exc: Exception) -> None:
        """A recorder failure: re-raise in strict mode, else log and stop recording this one."""
        if isinstance(exc, CaptureError) or self.strict:
            raise exc
        self._session._recorder_error(self, exc)
        if not self._ended:
            self._ended = True
            self._session.writer.abandon(
                Event(self._session.id, EventKind.SSE, self._seq, self.id),
                f"the recorder failed: {type(exc).__name__}: {exc}",
            )
            self._session.submit(
                end_event(
                    self._session.id,
                    self.id,
                    self._seq,
                    Outcome.INTERRUPTED,
                    "the recorder failed; the rest was not recorded",
                    at_ns=time.time_ns(),
                )
            )
            self._session._ended(self)

    # -- the request ---------------------------------------------------------

    def _offset(self, offset: int | None) -> int:
        # Offsets come from the caller when the exchange is recorded in another
        # process (see recorder.capture.worker); else they are measured here.
        return time.perf_counter_ns() - self._t0 if offset is None else offset

    def start(
        self,
        method: str,
        url: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        wall_ns: int | None = None,
    ) -> None:
        """Record the request; the clock of the exchange starts now (or at ``wall_ns``)."""
        self._t0 = time.perf_counter_ns()
        self._wall0 = time.time_ns() if wall_ns is None else wall_ns
        self._session._opened(self)
        try:
            self._submit(
                request_event(
                    self._session.id,
                    self.id,
                    method=method,
                    url=url,
                    headers=headers,
                    body=body,
                    fidelity="wire",
                    redactor=self._session.redactor,
                    at_ns=self._wall0,
                    offset_ns=0,
                )
            )
        except Exception as exc:
            self._guard(exc)

    def response(
        self,
        status: int,
        headers: list[tuple[str, str]],
        http_version: str,
        *,
        offset: int | None = None,
    ) -> None:
        """Record the response head; decides whether the body is an SSE stream."""
        if self._ended:
            return
        try:
            offset = self._offset(offset)
            self._status = status
            content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
            self._streamed = content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
            extra: dict[str, Any] = {"http_version": http_version}
            decoder, codings = _content_decoder(headers)
            if decoder is not None:
                # The SDK gets the wire bytes; the log keeps the decoded body, as
                # the importers do, so frames and JSON bodies are readable.
                self._decoder = decoder
                extra["decoded_content_encoding"] = codings
            elif codings:
                extra["undecoded_content_encoding"] = codings
            self._submit(
                response_head_event(
                    self._session.id,
                    self.id,
                    status=status,
                    headers=headers,
                    fidelity="wire",
                    streamed=self._streamed,
                    redactor=self._session.redactor,
                    at_ns=self._wall0 + offset,
                    offset_ns=offset,
                    extra=extra,
                )
            )
        except Exception as exc:
            self._guard(exc)

    # -- the body ------------------------------------------------------------

    def feed(self, chunk: bytes, *, offset: int | None = None) -> None:
        """Record ``chunk`` of the body as it arrives (the hot path)."""
        if self._ended or not chunk:
            return
        try:
            offset = self._offset(offset)
            if self._decoder is not None:
                chunk = b"".join(self._decoder.decode(chunk))
            if self._streamed:
                for frame in self._splitter.feed(chunk):
                    self._frame(frame, offset)
                if self._status >= 400 and len(self._error_prefix) < _ERROR_PREFIX:
                    self._error_prefix += chunk[: _ERROR_PREFIX - len(self._error_prefix)]
            else:
                self._body += chunk
                if len(self._body) >= BODY_CHUNK:
                    self._body_event(offset, final=False)
        except Exception as exc:
            self._guard(exc)

    def already_read(
        self, content: bytes, *, offset: int | None = None, finish: bool = True
    ) -> None:
        """The inner transport returned a response it had read itself (``content`` decoded)."""
        self._decoder = None
        self.feed(content, offset=offset)
        if finish:
            self.finish(offset=offset)

    def _frame(self, frame: SSEFrame, offset: int) -> None:
        # Once per frame on the client's thread, so kept flat: one parse (the
        # fields are frame.fields(), inlined), the tracker only sees terminal
        # events (it ignores the rest), and CaptureSession.submit is inlined.
        obj = frame.json()
        event_type = number = None
        if type(obj) is dict:
            value = obj.get("type")
            if isinstance(value, str):
                event_type = value
            value = obj.get("sequence_number")
            if isinstance(value, int) and not isinstance(value, bool):
                number = value
            response = obj.get("response")
            if isinstance(response, dict):
                value = response.get("id")
                if value and isinstance(value, str):
                    self._response_id = value
            if event_type in _TERMINAL:
                self._tracker.observe(event_type, obj)
        session = self._session
        raw, meta = frame.raw, None
        if event_type in ECHO_TYPES or type(obj) is not dict:
            raw, meta = redact_frame(session.redactor, raw)  # the response echoes the request
        event = sse_frame_event(
            session.id,
            self.id,
            self._seq,
            raw,
            frame.event,
            event_type,
            number,
            self._response_id,
            self._wall0 + offset,
            offset,
            meta,
        )
        if not session.writer.submit(event) and session.strict:
            raise CaptureError(session._failure_message("recording"))
        self._seq += 1

    def _body_event(self, offset: int, *, final: bool) -> None:
        if not final and self._seq == 2 and self._session.redactor.holds_body(self._body):
            return  # a JSON body to redact is stored whole (see Redactor.holds_body)
        body = bytes(self._body)
        self._body.clear()
        if not self._error_prefix:
            # Kept to decide the outcome: all of a small body, the start of a large one.
            self._error_prefix += body[:BODY_CHUNK]
        if not body and not final:
            return
        single = final and self._seq == 2
        self._submit(
            body_event(
                self._session.id,
                self.id,
                self._seq,
                body,
                at_ns=self._wall0 + offset,
                offset_ns=offset,
                response_id=body_response_id(body) if single else None,
                redactor=self._session.redactor if single else None,
            )
        )

    def _drain(self, offset: int) -> None:
        """Whatever the splitter or decoder still holds, stored before the ending."""
        if self._decoder is not None:
            tail = b"".join(self._decoder.flush())
            self._decoder = None
            if tail:
                self.feed(tail, offset=offset)
        if self._streamed:
            for frame in self._splitter.flush():
                if frame.cut:
                    self._cut_frame(frame, offset)
                else:
                    self._frame(frame, offset)
        elif self._body or self._seq == 2:
            self._body_event(offset, final=True)

    def _cut_frame(self, frame: SSEFrame, offset: int) -> None:
        """The stream stopped inside this last frame: the client dropped it, so must the outcome."""
        self._tracker.cut(frame.type)
        self._submit(
            unterminated_sse_event(
                self._session.id,
                self.id,
                self._seq,
                frame,
                self._response_id,
                self._session.redactor,
                at_ns=self._wall0 + offset,
                offset_ns=offset,
            )
        )

    # -- endings -------------------------------------------------------------

    def end(
        self,
        outcome: Outcome,
        reason: str | None,
        details: dict[str, Any] | None = None,
        *,
        offset: int | None = None,
    ) -> None:
        """End the exchange with ``outcome`` (stores what the splitter still holds first)."""
        if self._ended:
            return
        try:
            offset = self._offset(offset)
            if self._status:
                self._drain(offset)
            self._ended = True
            self._session.submit(
                end_event(
                    self._session.id,
                    self.id,
                    self._seq,
                    outcome,
                    reason,
                    at_ns=self._wall0 + offset,
                    offset_ns=offset,
                    details=details,
                )
            )
            self._seq += 1
        except Exception as exc:
            self._guard(exc)
        finally:
            self._ended = True
            self._session._ended(self)

    def finish(self, *, offset: int | None = None) -> None:
        """The body ended normally: the outcome follows the status and the events."""
        if self._ended:
            return
        outcome: Outcome
        offset = self._offset(offset)
        if self._streamed:
            try:
                self._drain(offset)
            except Exception as exc:
                self._guard(exc)
                return
            if self._status >= 400:
                outcome, reason = outcome_for_body(self._status, bytes(self._error_prefix))
            else:
                outcome, reason = self._tracker.result()
        else:
            try:
                self._drain(offset)
            except Exception as exc:
                self._guard(exc)
                return
            outcome, reason = outcome_for_body(self._status, bytes(self._error_prefix))
        self.end(outcome, reason, offset=offset)

    def fail(self, exc: BaseException) -> None:
        """The transport raised ``exc`` (before or during the body)."""
        outcome, reason, details = failure_ending(exc)
        self.end(outcome, reason, details)

    def close_early(self) -> None:
        """The client closed the response before its end (break, close(), an exception)."""
        if self._ended:
            return
        reason, details = early_close(sys.exc_info()[1])
        self.closed_early(reason, details)

    def closed_early(
        self, reason: str, details: dict[str, Any], *, offset: int | None = None
    ) -> None:
        if self._ended:
            return
        details = dict(details)
        terminal, api_reason = self._tracker.outcome, self._tracker.reason
        if terminal is not None:
            # The API already said how the response ended (e.g. the SDK raises on
            # an `error` event and closes): that is the outcome; the early close
            # is a detail.
            details["client_closed"] = reason
            self.end(terminal, api_reason, details, offset=offset)
        else:
            self.end(Outcome.CLIENT_CLOSED, reason, details, offset=offset)

    def interrupt(self, reason: str, *, offset: int | None = None) -> None:
        self.end(Outcome.INTERRUPTED, reason, offset=offset)

    def sync_start(self) -> None:
        """Strict mode: the request must be stored before it is sent."""
        sync_before_sending(self._session, self.fail)

    def sync_end(self) -> None:
        """Strict mode: the ending must be stored before the call returns."""
        self._session.sync("ending an exchange")

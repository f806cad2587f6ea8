"""The recorder of one exchange: a request and its response turned into events as they happen.

Guarantees:

* Transport-neutral: the sync and async transports and the proxy drive an
  :class:`ExchangeRecorder` with plain values (method, URL, headers, body
  chunks), so every way in records the same events.
* Cheap on the hot path: :meth:`ExchangeRecorder.feed` cuts SSE frames with
  the shared :class:`~recorder.sse.SSESplitter`, reads each frame's type and
  numbers with :func:`~recorder.capture.scan.frame_fields`, and hands the
  event to the session's sink, which never blocks. It returns True when the
  sink asks the producer to wait: the transport then waits *after* handing
  the chunk on (:meth:`ExchangeRecorder.wait`, ``await``
  :meth:`ExchangeRecorder.wait_async`), so the client is never kept from a
  chunk it could have.
* Never breaks the call (``on_store_error="log"``, the default): a store
  failure, or even a bug in the recorder, is logged and counted and the
  exchange is marked as a capture gap; the bytes still go to the client. With
  ``on_store_error="raise"``, the request is durably stored before it is sent,
  the ending is durably stored before the call returns, and any store failure
  raises :class:`~recorder.capture.sink.CaptureError` instead.
* Every exchange ends with exactly one ``exchange_end`` carrying its outcome.
* Bounded memory per exchange, whatever the server sends: a compressed body
  is decoded at most 1 MiB at a time (the rest stays compressed until the
  recorder asks for it; :meth:`ExchangeRecorder.wait_async` decodes it piece
  by piece, letting the event loop run between pieces); an unfinished SSE
  frame, and a JSON body held whole to be redacted, are never held past the
  session's ``max_event_bytes``; a compressed body is decoded to at most
  ``max_decoded_bytes``. Past a limit the recorder drops what it held and
  stops recording the exchange: its ``exchange_end`` is ``interrupted``
  with ``capture_gap`` details and a ``capture_gap`` event follows, while
  the client still gets every byte (the transports hand chunks on whatever
  the recorder does). In strict mode the limit raises
  :class:`~recorder.capture.sink.CaptureError` instead, after recording the
  same ending.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

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
from recorder.capture.scan import NOT_PARSED, frame_fields, simple_frame
from recorder.capture.sink import CaptureError
from recorder.events import Event, EventKind, Outcome, new_id
from recorder.outcome import _TERMINAL, StreamOutcome, outcome_for_body
from recorder.redact import ECHO_TYPES
from recorder.sse import SSEFrame, SSESplitter

if TYPE_CHECKING:
    from recorder.capture.session import CaptureSession

__all__ = ["BODY_CHUNK", "ExchangeRecorder", "early_close", "failure_ending"]

# A non-streamed body is stored in BODY events of at most this size, so a large
# download never sits in memory whole; small JSON bodies stay one event.
BODY_CHUNK = 256 * 1024
# For an error status on a stream, the first bytes are kept to find the API's message.
_ERROR_PREFIX = 64 * 1024


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
        "_decoded",
        "_decoder",
        "_ended",
        "_error_prefix",
        "_pieces",
        "_pieces_offset",
        "_response_id",
        "_seq",
        "_session",
        "_sink",
        "_splitter",
        "_status",
        "_streamed",
        "_submit_event",
        "_t0",
        "_tracker",
        "_wall0",
        "id",
    )

    def __init__(self, session: CaptureSession) -> None:
        self.id = new_id()
        self._session = session
        self._sink = session.sink
        self._submit_event: Callable[[Event], bool] = session.sink.submit
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
        # The decoded pieces of the last compressed chunk not yet recorded
        # (the decoder yields them lazily, at most 1 MiB each), and its offset.
        self._pieces: Iterator[bytes] | None = None
        self._pieces_offset = 0
        self._decoded = 0

    @property
    def strict(self) -> bool:
        return self._session.strict

    @property
    def ended(self) -> bool:
        return self._ended

    def _submit(self, event: Event) -> None:
        if not self._submit_event(event) and self._session.strict:
            raise CaptureError(self._session._failure_message("recording"))
        self._seq += 1

    def _guard(self, exc: Exception) -> None:
        """A recorder failure: re-raise in strict mode, else log and stop recording this one."""
        if isinstance(exc, CaptureError) or self.strict:
            raise exc
        self._session._recorder_error(self, exc)
        if not self._ended:
            self._ended = True
            self._sink.abandon(
                Event(self._session.id, EventKind.SSE, self._seq, self.id),
                f"the recorder failed: {type(exc).__name__}: {exc}",
            )
            self._submit_event(
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

    # -- waiting for the sink ---------------------------------------------------

    def wait(self) -> None:
        """After :meth:`feed` returned True: record what is left of the chunk, then
        block until the sink has room."""
        while self._pieces is not None:
            self._decode_next()
        if self._sink.congested:
            self._sink.wait_for_room()

    async def wait_async(self) -> None:
        """:meth:`wait` for an event loop, which runs on between decoded pieces."""
        while self._pieces is not None:
            self._decode_next()
            if self._pieces is not None:
                # A small compressed chunk can decode to many MiB: let every
                # other client's relay have the loop between two pieces.
                await asyncio.sleep(0)
        if self._sink.congested:
            await self._sink.wait_for_room_async()

    # -- the request ---------------------------------------------------------

    def start(self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """Record the request; the clock of the exchange starts now."""
        self._t0 = time.perf_counter_ns()
        self._wall0 = time.time_ns()
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

    def response(self, status: int, headers: list[tuple[str, str]], http_version: str) -> None:
        """Record the response head; decides whether the body is an SSE stream."""
        if self._ended:
            return
        try:
            offset = time.perf_counter_ns() - self._t0
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

    def feed(self, chunk: bytes, arrived_ns: int = 0) -> bool:
        """Record ``chunk`` of the body as it arrives (the hot path).

        ``arrived_ns``: when it arrived (``time.perf_counter_ns()``), if that
        was before now. True when the sink asks the producer to wait before
        the next chunk.
        """
        if self._ended or not chunk:
            return False
        try:
            offset = (arrived_ns or time.perf_counter_ns()) - self._t0
            if self._decoder is None:
                self._take(chunk, offset)
            else:
                while self._pieces is not None:  # a caller that did not wait
                    self._decode_next()
                self._pieces = self._decoder.decode(chunk)
                self._pieces_offset = offset
                self._decode_next()
                # Strict mode records a chunk before it is handed on: all of it now.
                while self.strict and self._pieces is not None:
                    self._decode_next()
        except Exception as exc:
            self._guard(exc)
        return self._pieces is not None or self._sink.congested

    def _decode_next(self) -> None:
        """Record the next decoded piece of the pending chunk (at most 1 MiB)."""
        pieces = self._pieces
        if pieces is None:
            return
        try:
            piece = next(pieces, None)
            if piece is None:
                self._pieces = None
                return
            self._decoded += len(piece)
            limit = self._session.max_decoded_bytes
            if self._decoded > limit:
                self._over_limit(f"the decoded body passed {limit} bytes")
                return
            self._take(piece, self._pieces_offset)
        except Exception as exc:
            self._pieces = None
            self._guard(exc)

    def _take(self, chunk: bytes, offset: int) -> None:
        """Record ``chunk`` of the (decoded) body."""
        if self._ended:
            return
        if self._streamed:
            splitter = self._splitter
            limit = self._session.max_event_bytes
            if (
                not splitter.is_whole(chunk)
                or len(chunk) > limit
                or not self._simple_frame(chunk, offset)
            ):
                for frame in splitter.feed(chunk):
                    if len(frame.raw) > limit:
                        self._over_limit(f"an SSE frame passed {limit} bytes")
                        return
                    self._frame(frame, offset)
                if splitter.pending > limit:
                    self._over_limit(f"an unfinished SSE frame passed {limit} bytes")
                    return
            if self._status >= 400 and len(self._error_prefix) < _ERROR_PREFIX:
                self._error_prefix += chunk[: _ERROR_PREFIX - len(self._error_prefix)]
        else:
            self._body += chunk
            if len(self._body) >= BODY_CHUNK:
                self._body_event(offset, final=False)

    def _over_limit(self, why: str) -> None:
        """Stop recording this exchange, past a memory limit: a counted, visible gap.

        What the recorder held is dropped at once; the client still gets the
        rest of the response (the transport hands on every chunk), which
        the log says it does not hold: the ending is ``interrupted`` with
        ``capture_gap`` details, followed by a ``capture_gap`` event that
        ``verify`` counts. Strict mode raises instead, after that ending.
        """
        if self._ended:
            return
        self._ended = True
        self._pieces = None
        self._decoder = None
        self._splitter = SSESplitter()
        self._body = bytearray()
        self._error_prefix = bytearray()
        session = self._session
        session._over_limit(self, why)
        reason = f"recording stopped: {why}; the rest of the response was not recorded"
        offset = time.perf_counter_ns() - self._t0
        seq = self._seq
        try:
            self._submit(
                end_event(
                    session.id,
                    self.id,
                    seq,
                    Outcome.INTERRUPTED,
                    reason,
                    at_ns=self._wall0 + offset,
                    offset_ns=offset,
                    details={"capture_gap": {"reason": why, "first_unrecorded_seq": seq}},
                )
            )
            self._submit(
                Event(
                    session.id,
                    EventKind.CAPTURE_GAP,
                    None,
                    meta={"exchange": self.id, "reason": reason, "first_lost_seq": seq},
                )
            )
        finally:
            session._ended(self)
        if self.strict:
            raise CaptureError(f"codetape cannot record this response: {reason}")

    def already_read(self, content: bytes) -> None:
        """The inner transport returned a response it had read itself (``content`` decoded)."""
        self._decoder = None
        self.feed(content)
        self.finish()

    def _simple_frame(self, raw: bytes, offset: int) -> bool:
        """The common case, cheaply: ``raw`` is one whole frame of the usual shape.

        False when it is not (the caller then hands it to the splitter as usual).
        """
        fields = simple_frame(raw)
        if fields is None:
            return False
        event_type, number = fields
        # This is where a frame's raw bytes become its event (see also _frame).
        event = sse_frame_event(
            self._session.id,
            self.id,
            self._seq,
            raw,
            event_type,
            event_type,
            number,
            self._response_id,
            self._wall0 + offset,
            offset,
        )
        if not self._submit_event(event) and self._session.strict:
            raise CaptureError(self._session._failure_message("recording"))
        self._seq += 1
        return True

    def _frame(self, frame: SSEFrame, offset: int) -> None:
        # Once per frame on the client's thread, so kept flat: no full JSON
        # parse unless the frame needs one (see recorder.capture.scan).
        event_type, number, obj = frame_fields(frame)
        if type(obj) is dict:
            response = obj.get("response")
            if isinstance(response, dict):
                value = response.get("id")
                if value and isinstance(value, str):
                    self._response_id = value
            if event_type in _TERMINAL:
                self._tracker.observe(event_type, obj)
        # This is where a frame's raw bytes become its event.
        raw, meta = frame.raw, None
        if event_type in ECHO_TYPES or (obj is not NOT_PARSED and type(obj) is not dict):
            raw, meta = redact_frame(self._session.redactor, raw)  # the response echoes the request
        event = sse_frame_event(
            self._session.id,
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
        if not self._submit_event(event) and self._session.strict:
            raise CaptureError(self._session._failure_message("recording"))
        self._seq += 1

    def _body_event(self, offset: int, *, final: bool) -> None:
        if self._seq == 2 and self._session.redactor.holds_body(self._body):
            # A JSON body to redact is stored whole (see Redactor.holds_body),
            # so it is held in memory whole: never past the event limit.
            limit = self._session.max_event_bytes
            if len(self._body) > limit:
                self._over_limit(f"a JSON body held to be redacted passed {limit} bytes")
                return
            if not final:
                return
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
        while self._pieces is not None:
            self._decode_next()
        decoder, self._decoder = self._decoder, None
        if decoder is not None and not self._ended:
            self._pieces = decoder.flush()
            self._pieces_offset = offset
            while self._pieces is not None:
                self._decode_next()
        if self._ended:
            return  # a limit stopped the recording meanwhile
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
        self, outcome: Outcome, reason: str | None, details: dict[str, Any] | None = None
    ) -> None:
        """End the exchange with ``outcome`` (stores what the splitter still holds first)."""
        if self._ended:
            return
        try:
            offset = time.perf_counter_ns() - self._t0
            if self._status:
                self._drain(offset)
                if self._ended:
                    return  # a limit stopped the recording, with its own ending
            self._ended = True
            self._submit(
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
        except Exception as exc:
            self._guard(exc)
        finally:
            self._ended = True
            self._session._ended(self)

    def finish(self) -> None:
        """The body ended normally: the outcome follows the status and the events."""
        if self._ended:
            return
        outcome: Outcome
        try:
            self._drain(time.perf_counter_ns() - self._t0)
        except Exception as exc:
            self._guard(exc)
            return
        if self._streamed and self._status < 400:
            outcome, reason = self._tracker.result()
        else:
            outcome, reason = outcome_for_body(self._status, bytes(self._error_prefix))
        self.end(outcome, reason)

    def fail(self, exc: BaseException) -> None:
        """The transport raised ``exc`` (before or during the body)."""
        outcome, reason, details = failure_ending(exc)
        self.end(outcome, reason, details)

    def close_early(self) -> None:
        """The client closed the response before its end (break, close(), an exception)."""
        if self._ended:
            return
        reason, details = early_close(sys.exc_info()[1])
        details = dict(details)
        terminal, api_reason = self._tracker.outcome, self._tracker.reason
        if terminal is not None:
            # The API already said how the response ended (e.g. the SDK raises on
            # an `error` event and closes): that is the outcome; the early close
            # is a detail.
            details["client_closed"] = reason
            self.end(terminal, api_reason, details)
        else:
            self.end(Outcome.CLIENT_CLOSED, reason, details)

    def interrupt(self, reason: str) -> None:
        self.end(Outcome.INTERRUPTED, reason)

    def sync_start(self) -> None:
        """Strict mode: the request must be stored before it is sent."""
        try:
            self._session.sync("sending a request")
        except CaptureError as exc:
            self.fail(exc)
            raise

    def sync_end(self) -> None:
        """Strict mode: the ending must be stored before the call returns."""
        self._session.sync("ending an exchange")

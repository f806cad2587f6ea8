"""httpx2 transports that answer requests from a recording, never from the network.

Guarantees:

* :class:`ReplayTransport` (sync) and :class:`AsyncReplayTransport` (async)
  answer each request with the recorded exchange that :class:`~replay.matching.Matcher`
  picks for it: the recorded status, the recorded headers (minus the transfer
  headers that would not fit the decoded body, see
  :meth:`replay.source.Exchange.replay_headers`) and the recorded body bytes.
* The body is delivered as recorded: one chunk per SSE frame (never one blob),
  one chunk per ``body`` event. An exchange that ended in a transport error
  replays as the live run saw it: its recorded bytes, then the same
  ``httpx2`` exception class (``ReadTimeout``, ``RemoteProtocolError``...;
  before any response, ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``...),
  so the SDK raises what it raised live (``APITimeoutError`` for a timeout,
  ``APIConnectionError`` otherwise). A failure recorded without its class
  (imports, a transport's own exception) replays as ``httpx2.TimeoutException``
  when it was a timeout, else ``ReadError`` after the response head and
  ``ConnectError`` before it.
* Pacing ``instant`` (the default) sleeps never. Pacing ``original`` sends the
  head and each chunk at its recorded ``offset_ns`` divided by ``speed``,
  counted from when the transport received the request. Imported recordings
  carry no timing (``offset_ns`` is ``None``): such chunks are sent at once,
  so ``original`` degrades to ``instant`` for them.
* A request that matches nothing raises :class:`~replay.matching.NoMatch`
  (which the OpenAI SDK propagates without retrying), unless a ``fallback``
  transport is given, in which case the request goes there (how the
  ``new_episodes`` record mode records what the tape lacks).
* Nothing here opens a connection: without a ``fallback`` no network code is
  reachable.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio
import httpx2

from recorder.errors import CodetapeError
from replay.matching import Matcher, MatchOptions, NoMatch
from replay.source import Chunk, Exchange, Recording, load

__all__ = [
    "AsyncReplayTransport",
    "Clock",
    "Pace",
    "Pacing",
    "ReplayTransport",
    "SystemClock",
    "failure_class",
]


class Pace(enum.StrEnum):
    """When replayed bytes are sent."""

    INSTANT = "instant"
    ORIGINAL = "original"

    @classmethod
    def parse(cls, value: str) -> Pace:
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(p.value for p in cls)
            raise CodetapeError(f"unknown pace {value!r}: choose one of {valid}") from None


class Clock(Protocol):
    """Time as pacing sees it (a test can pass a fake one)."""

    def now_ns(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """The monotonic clock; async sleeps through anyio (asyncio or trio)."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Pacing:
    """A pace and a speed factor (2.0 plays twice as fast as recorded)."""

    pace: Pace = Pace.INSTANT
    speed: float = 1.0
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise CodetapeError(f"speed must be a positive number, got {self.speed}")

    def due_ns(self, start_ns: int, offset_ns: int | None) -> int | None:
        """When something recorded at ``offset_ns`` is due, or ``None`` for now."""
        if self.pace is Pace.INSTANT or offset_ns is None:
            return None
        return start_ns + int(offset_ns / self.speed)

    def wait(self, start_ns: int, offset_ns: int | None) -> None:
        due = self.due_ns(start_ns, offset_ns)
        if due is not None:
            delay = due - self.clock.now_ns()
            if delay > 0:
                self.clock.sleep(delay / 1e9)

    async def await_(self, start_ns: int, offset_ns: int | None) -> None:
        due = self.due_ns(start_ns, offset_ns)
        if due is not None:
            delay = due - self.clock.now_ns()
            if delay > 0:
                await self.clock.asleep(delay / 1e9)


def failure_class(exchange: Exchange) -> type[httpx2.RequestError]:
    """The ``httpx2`` exception class a recorded transport failure replays as."""
    named = getattr(httpx2, exchange.failure or "", None)
    if isinstance(named, type) and issubclass(named, httpx2.RequestError):
        return named
    if exchange.timeout:
        return httpx2.TimeoutException
    return httpx2.ConnectError if exchange.status is None else httpx2.ReadError


def _failure(exchange: Exchange, request: httpx2.Request, default: str) -> httpx2.RequestError:
    return failure_class(exchange)(f"replayed: {exchange.reason or default}", request=request)


def _ending_error(exchange: Exchange, request: httpx2.Request) -> httpx2.RequestError | None:
    if exchange.outcome == "transport_error":
        return _failure(exchange, request, "the recorded response broke off")
    return None


class _SyncStream(httpx2.SyncByteStream):
    def __init__(
        self, chunks: Sequence[Chunk], pacing: Pacing, start_ns: int, error: Exception | None
    ) -> None:
        self._chunks = chunks
        self._pacing = pacing
        self._start_ns = start_ns
        self._error = error

    def __iter__(self) -> Iterator[bytes]:
        if self._pacing.pace is Pace.INSTANT:
            for chunk in self._chunks:
                yield chunk.data
        else:
            for chunk in self._chunks:
                self._pacing.wait(self._start_ns, chunk.offset_ns)
                yield chunk.data
        if self._error is not None:
            raise self._error


class _AsyncStream(httpx2.AsyncByteStream):
    def __init__(
        self, chunks: Sequence[Chunk], pacing: Pacing, start_ns: int, error: Exception | None
    ) -> None:
        self._chunks = chunks
        self._pacing = pacing
        self._start_ns = start_ns
        self._error = error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            await self._pacing.await_(self._start_ns, chunk.offset_ns)
            yield chunk.data
        if self._error is not None:
            raise self._error


def _response(
    exchange: Exchange, request: httpx2.Request, stream: httpx2.SyncByteStream | _AsyncStream
) -> httpx2.Response:
    assert exchange.status is not None
    return httpx2.Response(
        exchange.status,
        headers=exchange.replay_headers(),
        stream=stream,
        request=request,
        extensions={"http_version": b"HTTP/1.1", "codetape_exchange": exchange.id},
    )


def _recording(
    source: Recording | Sequence[Exchange] | str | Path, db: str | None
) -> tuple[str, Sequence[Exchange]]:
    if isinstance(source, Recording):
        return source.source, source.exchanges
    if isinstance(source, str | Path):
        loaded = load(source, db)
        return loaded.source, loaded.exchanges
    return "the recording", source


class _ReplayBase:
    def __init__(
        self,
        source: Recording | Sequence[Exchange] | str | Path,
        *,
        match: MatchOptions | None = None,
        pace: Pace | str = Pace.INSTANT,
        speed: float = 1.0,
        clock: Clock | None = None,
        db: str | None = None,
    ) -> None:
        name, exchanges = _recording(source, db)
        self.matcher = Matcher(exchanges, match, source=name)
        pace = Pace.parse(pace) if isinstance(pace, str) else pace
        self.pacing = Pacing(pace, speed, clock or SystemClock())
        self.served: list[Exchange] = []
        """Exchanges served, in the order requests came (a repeat appears twice)."""
        self.forwarded = 0
        """Requests that matched nothing and went to the fallback transport."""

    def _match(self, request: httpx2.Request, body: bytes) -> Exchange:
        exchange = self.matcher.match(
            request.method, str(request.url), request.headers.multi_items(), body
        )
        self.served.append(exchange)
        return exchange

    @property
    def source(self) -> str:
        return self.matcher.source

    def unplayed(self) -> list[Exchange]:
        """Recorded exchanges no request has asked for yet."""
        return self.matcher.unplayed()

    def check_all_played(self) -> None:
        """Raise :class:`~replay.matching.UnplayedExchanges` if any exchange was not played."""
        self.matcher.check_all_played()


class ReplayTransport(_ReplayBase, httpx2.BaseTransport):
    """Sync replay transport: ``httpx2.Client(transport=ReplayTransport(tape))``."""

    def __init__(
        self,
        source: Recording | Sequence[Exchange] | str | Path,
        *,
        match: MatchOptions | None = None,
        pace: Pace | str = Pace.INSTANT,
        speed: float = 1.0,
        clock: Clock | None = None,
        db: str | None = None,
        fallback: httpx2.BaseTransport | None = None,
    ) -> None:
        super().__init__(source, match=match, pace=pace, speed=speed, clock=clock, db=db)
        self.fallback = fallback

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        start = self.pacing.clock.now_ns() if self.pacing.pace is Pace.ORIGINAL else 0
        body = request.read()
        try:
            exchange = self._match(request, body)
        except NoMatch:
            if self.fallback is None:
                raise
            self.forwarded += 1
            return self.fallback.handle_request(request)
        if exchange.status is None:
            raise _failure(exchange, request, "no response was recorded")
        self.pacing.wait(start, exchange.head_offset_ns)
        stream = _SyncStream(exchange.chunks, self.pacing, start, _ending_error(exchange, request))
        return _response(exchange, request, stream)

    def close(self) -> None:
        if self.fallback is not None:
            self.fallback.close()


class AsyncReplayTransport(_ReplayBase, httpx2.AsyncBaseTransport):
    """Async replay transport: ``httpx2.AsyncClient(transport=AsyncReplayTransport(tape))``."""

    def __init__(
        self,
        source: Recording | Sequence[Exchange] | str | Path,
        *,
        match: MatchOptions | None = None,
        pace: Pace | str = Pace.INSTANT,
        speed: float = 1.0,
        clock: Clock | None = None,
        db: str | None = None,
        fallback: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(source, match=match, pace=pace, speed=speed, clock=clock, db=db)
        self.fallback = fallback

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        start = self.pacing.clock.now_ns() if self.pacing.pace is Pace.ORIGINAL else 0
        body = await request.aread()
        try:
            exchange = self._match(request, body)
        except NoMatch:
            if self.fallback is None:
                raise
            self.forwarded += 1
            return await self.fallback.handle_async_request(request)
        if exchange.status is None:
            raise _failure(exchange, request, "no response was recorded")
        await self.pacing.await_(start, exchange.head_offset_ns)
        stream = _AsyncStream(exchange.chunks, self.pacing, start, _ending_error(exchange, request))
        return _response(exchange, request, stream)

    async def aclose(self) -> None:
        if self.fallback is not None:
            await self.fallback.aclose()

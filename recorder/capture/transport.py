r"""httpx2 transports that record every exchange while passing it through untouched.

Guarantees:

* The SDK's own code path is unchanged: the request goes to the inner
  transport as it came, and the response the SDK gets is the inner one with
  its byte stream wrapped. Every chunk is handed to the SDK as soon as the
  inner transport yields it; the recorder only looks at it on the way (a tee,
  never a buffer).
* Every request is one exchange with exactly one ending: normal end, the
  client closing early (``break``, ``close()``, an exception in its loop),
  transport errors and timeouts, cancellation; see
  :class:`~recorder.capture.exchange.ExchangeRecorder`.
* On the asyncio path (the proxy's relay), a chunk goes on to the consumer
  before the recorder looks at it (timed as it arrived): the relay never
  waits for the recorder. A chunk handed on is recorded even when the
  consumer stops right after it. (Strict mode records first: a chunk that
  cannot be recorded is not handed on.)
* When the session's sink asks producers to wait (the store fell behind),
  the wait happens after the chunk went on and before the next one is read:
  a thread waits, an event loop ``await``\ s and keeps serving everything else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2

from recorder.capture.exchange import ExchangeRecorder
from recorder.capture.session import CaptureSession, session_for
from recorder.store.store import EventStore

__all__ = ["AsyncRecordingTransport", "RecordingTransport"]


class _RecordingStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, x: ExchangeRecorder) -> None:
        self._inner = inner
        self._x = x

    def __iter__(self) -> Iterator[bytes]:
        x = self._x
        try:
            for chunk in self._inner:
                wait = x.feed(chunk)
                yield chunk
                if wait:
                    x.wait()
        except GeneratorExit:
            x.close_early()
            raise
        except BaseException as exc:
            x.fail(exc)
            raise
        x.finish()
        if x.strict:
            x.sync_end()

    def close(self) -> None:
        try:
            self._x.close_early()
        finally:
            self._inner.close()


class _AsyncRecordingStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, x: ExchangeRecorder) -> None:
        self._inner = inner
        self._x = x
        # A chunk handed on and not yet recorded, and when it arrived.
        self._unrecorded: bytes = b""
        self._arrived = 0

    def _record_handed_on(self) -> None:
        chunk, self._unrecorded = self._unrecorded, b""
        if chunk:
            self._x.feed(chunk, self._arrived)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        x = self._x
        try:
            async for chunk in self._inner:
                if x.strict:
                    wait = x.feed(chunk)
                    yield chunk
                else:
                    self._arrived = time.perf_counter_ns()
                    self._unrecorded = chunk
                    yield chunk
                    self._unrecorded = b""
                    wait = x.feed(chunk, self._arrived)
                if wait:
                    await x.wait_async()
        except GeneratorExit:
            self._record_handed_on()
            x.close_early()
            raise
        except BaseException as exc:
            self._record_handed_on()
            x.fail(exc)
            raise
        x.finish()
        if x.strict:
            await asyncio.to_thread(x.sync_end)

    async def aclose(self) -> None:
        try:
            self._record_handed_on()
            self._x.close_early()
        finally:
            await self._inner.aclose()


class RecordingTransport(httpx2.BaseTransport):
    """Wraps ``inner`` (default: a new ``httpx2.HTTPTransport``) and records into a session.

    ``session`` is a session name (a new :class:`CaptureSession` in ``store``,
    closed when this transport closes; ``options`` go to it) or an open
    :class:`CaptureSession` to share with other transports.
    """

    def __init__(
        self,
        inner: httpx2.BaseTransport | None = None,
        store: EventStore | str | None = None,
        *,
        session: str | CaptureSession = "capture",
        **options: Any,
    ) -> None:
        self.session, self._owns_session = session_for(store, session, options)
        self.inner = inner if inner is not None else httpx2.HTTPTransport()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        x = self.session.exchange()
        x.start(request.method, str(request.url), request.headers.multi_items(), body)
        if x.strict:
            x.sync_start()
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            x.fail(exc)
            raise
        x.response(response.status_code, response.headers.multi_items(), response.http_version)
        if response.is_stream_consumed:
            # A mock built with `content=` has read its body already.
            x.already_read(response.content)
            return response
        assert isinstance(response.stream, httpx2.SyncByteStream)
        response.stream = _RecordingStream(response.stream, x)
        return response

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self._owns_session:
                self.session.close()


class AsyncRecordingTransport(httpx2.AsyncBaseTransport):
    """The asyncio twin of :class:`RecordingTransport` (default inner: ``AsyncHTTPTransport``)."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport | None = None,
        store: EventStore | str | None = None,
        *,
        session: str | CaptureSession = "capture",
        **options: Any,
    ) -> None:
        self.session, self._owns_session = session_for(store, session, options)
        self.inner = inner if inner is not None else httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        x = self.session.exchange()
        x.start(request.method, str(request.url), request.headers.multi_items(), body)
        if x.strict:
            # The wait for the database must not block the event loop.
            await asyncio.to_thread(x.sync_start)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            x.fail(exc)
            raise
        x.response(response.status_code, response.headers.multi_items(), response.http_version)
        if response.is_stream_consumed:
            x.already_read(response.content)
            return response
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _AsyncRecordingStream(response.stream, x)
        return response

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if self._owns_session:
                # Draining the writer waits on the database: not on the event loop.
                await asyncio.to_thread(self.session.close)

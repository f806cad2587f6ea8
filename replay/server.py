"""A replay server: recorded exchanges over real HTTP, for any client that can change ``base_url``.

Guarantees:

* :class:`ReplayApp` is an ASGI app that answers each request exactly like
  :class:`~replay.transport.ReplayTransport` would (same matcher, same
  headers, same bytes): a streamed response is sent one recorded SSE frame per
  ASGI body message (chunked on the wire), a non-streamed one with a
  ``content-length`` that fits the replayed body. Pacing is the same too.
* A request that matches nothing gets ``404`` with an OpenAI-style error body
  whose ``message`` is the :class:`~replay.matching.NoMatch` text (closest
  recorded request and each difference), plus ``x-should-retry: false`` so
  SDKs do not retry it. Clients see a tape by its file name only, never its
  path on this machine (in that message and in the status).
* A recorded transport failure fails the client as it can over HTTP: a
  timeout (before the response or mid-body) as silence after the recorded
  bytes, until the client's own timeout fires as it did live (or the server
  stops); a break-off mid-body as the recorded bytes, then a dropped
  connection; any other failure before a response (a connection error) as
  ``502``, since a server that accepted the connection cannot refuse it.
* ``GET /__codetape__/status`` returns what was played and what was not.
* Bounded clients (:mod:`recorder.http_limits`, shared with the recording
  proxy): a request body larger than ``max_request_bytes`` is answered 413
  as soon as its ``Content-Length`` or its received bytes say so, one that
  stops arriving for ``body_timeout`` seconds 408, without being held whole;
  under :class:`ReplayServer` and :func:`serve`, a connection that sends no
  whole request head within the limits' ``header_timeout`` is closed, and
  one beyond ``max_connections`` is answered 503 and closed.
* :class:`ReplayServer` runs the app under uvicorn on a background thread
  (``port=0`` picks a free port) and stops it on :meth:`ReplayServer.close`;
  :func:`serve` runs it in the foreground (the ``codetape serve`` command).
  Nothing is proxied upstream: the server only ever replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any, TextIO

import httpx2
import uvicorn

from recorder.http_limits import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_REQUEST_BYTES,
    ServerLimits,
    Stalled,
    TooLarge,
    listening_socket,
    read_body,
    refusal_headers,
    server_config,
)
from replay.matching import Matcher, MatchOptions, NoMatch
from replay.source import Exchange, Recording
from replay.transport import Clock, Pace, Pacing, SystemClock, failure_class

__all__ = ["STATUS_PATH", "ReplayApp", "ReplayServer", "serve"]

STATUS_PATH = "/__codetape__/status"
# How often a replayed timeout's silence checks whether the server is stopping.
_SILENCE_POLL = 0.2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _BrokenOff(Exception):
    """Raised after the recorded bytes of an exchange that broke off: uvicorn drops
    the connection, as the original server did."""


class _QuietBrokenOff(logging.Filter):
    """A replayed break-off is intended: keep uvicorn from logging it as a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _BrokenOff)


_FILTER = _QuietBrokenOff()


def _shown_source(source: str) -> str:
    """What clients are told a recording is: a tape's file name, not where it lives here."""
    return os.path.basename(source) if os.path.isfile(source) else source


class ReplayApp:
    """The ASGI app (see the module docstring)."""

    def __init__(
        self,
        recording: Recording,
        *,
        match: MatchOptions | None = None,
        pace: Pace | str = Pace.INSTANT,
        speed: float = 1.0,
        clock: Clock | None = None,
        log: TextIO | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        body_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
    ) -> None:
        if max_request_bytes < 0:
            raise ValueError(f"max_request_bytes must be >= 0, got {max_request_bytes}")
        self.max_request_bytes = max_request_bytes
        self.body_timeout = body_timeout
        self.recording = recording
        self.matcher = Matcher(recording.exchanges, match, source=_shown_source(recording.source))
        self.pacing = Pacing(
            Pace.parse(pace) if isinstance(pace, str) else pace, speed, clock or SystemClock()
        )
        self.log = log
        self._stopping = threading.Event()

    def stop(self) -> None:
        """The server is stopping: end the silences that replay recorded timeouts."""
        self._stopping.set()

    def load(self, recording: Recording) -> None:
        """Serve ``recording`` from now on, all of it unplayed (one server, many tapes)."""
        self.matcher = Matcher(
            recording.exchanges, self.matcher.options, source=_shown_source(recording.source)
        )
        self.recording = recording

    def _say(self, line: str) -> None:
        if self.log is not None:
            print(line, file=self.log, flush=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        start = self.pacing.clock.now_ns()
        try:
            body = await read_body(scope, receive, self.max_request_bytes, self.body_timeout)
        except (TooLarge, Stalled) as exc:
            status = 413 if isinstance(exc, TooLarge) else 408
            error = {"message": str(exc), "type": "codetape", "code": status}
            await self._json(send, status, {"error": error}, close=status == 408)
            return
        if body is None:
            return  # gone before its body was whole: no one to answer
        method: str = scope["method"]
        path = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        if method == "GET" and scope["path"] == STATUS_PATH:
            await self._json(send, 200, self.status())
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        try:
            exchange = self.matcher.match(method, f"http://replay{target}", headers, body)
        except NoMatch as exc:
            self._say(f"codetape: {exc}")
            await self._json(
                send,
                404,
                {"error": {"message": str(exc), "type": "codetape_no_match", "code": "no_match"}},
            )
            return
        self._say(f"codetape: {method} {target} -> {exchange.describe()}")
        await self._play(exchange, start, send, receive)

    async def _play(self, exchange: Exchange, start: int, send: Send, receive: Receive) -> None:
        timed_out = exchange.outcome == "transport_error" and issubclass(
            failure_class(exchange), httpx2.TimeoutException
        )
        if exchange.status is None:
            reason = exchange.reason or "no response was recorded"
            if timed_out:
                await self._silence(receive)
                raise _BrokenOff(reason)
            await self._json(
                send, 502, {"error": {"message": f"replayed: {reason}", "type": "codetape"}}
            )
            return
        await self.pacing.await_(start, exchange.head_offset_ns)
        await send(
            {
                "type": "http.response.start",
                "status": exchange.status,
                "headers": [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in exchange.replay_headers()
                ],
            }
        )
        for chunk in exchange.chunks:
            await self.pacing.await_(start, chunk.offset_ns)
            await send({"type": "http.response.body", "body": chunk.data, "more_body": True})
        if exchange.outcome == "transport_error":
            if timed_out:
                await self._silence(receive)
            raise _BrokenOff(exchange.reason or "the recorded response broke off")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _silence(self, receive: Receive) -> None:
        """Send nothing until the client hangs up (its timeout fired) or the server stops."""
        while not self._stopping.is_set():
            try:
                message = await asyncio.wait_for(receive(), _SILENCE_POLL)
            except TimeoutError:
                continue
            if message["type"] == "http.disconnect":
                return

    async def _json(self, send: Send, status: int, value: Any, *, close: bool = False) -> None:
        data = json.dumps(value, ensure_ascii=False).encode()
        # A stalled body closes the connection (see recorder.http_limits.refusal_headers).
        headers = refusal_headers() if close else [(b"content-type", b"application/json")]
        headers += [(b"content-length", str(len(data)).encode()), (b"x-should-retry", b"false")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data, "more_body": False})

    def status(self) -> dict[str, Any]:
        unplayed = self.matcher.unplayed()
        return {
            "source": _shown_source(self.recording.source),
            "exchanges": len(self.recording.exchanges),
            "played": self.matcher.played_count(),
            "unplayed": [x.describe() for x in unplayed],
        }


def _config(app: ReplayApp, limits: ServerLimits) -> uvicorn.Config:
    # h11 (guarded) and no websockets/lifespan: nothing optional is imported, nothing to start up.
    config = server_config(
        app, limits, ws="none", lifespan="off", log_level="warning", access_log=False
    )
    # After Config set up logging (it configures the uvicorn loggers).
    error_log = logging.getLogger("uvicorn.error")
    if _FILTER not in error_log.filters:
        error_log.addFilter(_FILTER)
    return config


class _Server(uvicorn.Server):
    """uvicorn for a :class:`ReplayApp`: Ctrl-C also ends the app's replayed silences,
    which uvicorn would otherwise wait for before it exits."""

    def __init__(self, app: ReplayApp, limits: ServerLimits | None = None) -> None:
        super().__init__(_config(app, limits or ServerLimits(app.max_request_bytes)))
        self._app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._app.stop()
        super().handle_exit(sig, frame)


class ReplayServer:
    """Run a :class:`ReplayApp` on a background thread; ``url`` is where it listens."""

    def __init__(
        self,
        app: ReplayApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: ServerLimits | None = None,
    ) -> None:
        self.app = app
        server = _Server(app, limits)  # first: it may refuse the limits before binding
        self._sock = listening_socket(host, port)
        bound = self._sock.getsockname()
        self.host, self.port = host, int(bound[1])
        self._server = server
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                self._sock.close()
                raise RuntimeError("the replay server failed to start")
            self._thread.join(0.01)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` for recordings made against ``https://api.openai.com/v1``."""
        return f"{self.url}/v1"

    def close(self) -> None:
        self.app.stop()
        self._server.should_exit = True
        self._thread.join()
        self._sock.close()

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(
    app: ReplayApp,
    host: str,
    port: int,
    *,
    out: TextIO = sys.stdout,
    limits: ServerLimits | None = None,
) -> dict[str, Any]:
    """Serve in the foreground until interrupted; return the final status."""
    server = _Server(app, limits)
    sock = listening_socket(host, port)
    try:
        bound = sock.getsockname()
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound[1]}"
        print(
            f"codetape: replaying {len(app.recording.exchanges)} exchanges from "
            f"{app.recording.source} on {url} (OpenAI base_url: {url}/v1); Ctrl-C stops",
            file=out,
            flush=True,
        )
        # uvicorn re-raises the Ctrl-C it handled; stopping is the normal way out.
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[sock])
    finally:
        sock.close()
    return app.status()

"""A recording reverse proxy (ASGI), so clients in any language can be recorded.

Point a client's base URL at the proxy; it forwards each request to the
upstream and streams the response back while recording it.

Guarantees:

* Streaming, not buffering: each chunk from the upstream is sent on to the
  client as soon as it arrives (the recording is a tee through the same
  :class:`~recorder.capture.transport.AsyncRecordingTransport` the SDK path
  uses, so proxied and in-process captures are the same events).
* Transparent: the request goes upstream with the client's method, path,
  query, headers and body (hop-by-hop headers excepted), and the client gets
  the upstream's status, headers and raw body bytes (still compressed if the
  upstream compressed them). The proxy adds no headers of its own.
* A client hanging up ends its exchange at once (as ``client_closed``, "the
  client disconnected") and closes the upstream stream, even while the
  upstream is silent (a code interpreter call running its code).
* Goes only where it is told: every forwarded URL is the ``--upstream``'s
  scheme, host and port plus the client's path and query; a target that is
  not a plain path (``@host``, ``//host``, an absolute URL, ``*``, ``..``
  segments, CONNECT) is answered 400/405 and sent nowhere (see
  :mod:`recorder.upstream`).
* Upstream failures become 502 (504 for timeouts) with an OpenAI-style JSON
  error; in strict mode a request that cannot be recorded is refused with 503
  before it reaches the upstream.
* Bounded memory per request: a request body is held whole (it is recorded
  and forwarded as one), so one larger than ``max_request_bytes`` is answered
  413 as soon as its ``Content-Length`` or its received bytes say so, and one
  whose bytes stop for ``body_timeout`` seconds 408; neither is forwarded or
  recorded (:mod:`recorder.http_limits`).
* Bounded memory per response, whatever the upstream sends: the client gets
  the upstream's bytes as they come, while the recorder holds at most the
  session's ``max_event_bytes`` of one event (an SSE frame, a JSON body kept
  to be redacted) and decodes a compressed body 1 MiB at a time, yielding the
  event loop between pieces, and no further than ``max_decoded_bytes``; past
  a limit, recording of that exchange stops as a capture gap and the relay
  goes on (see :mod:`recorder.capture.exchange`).
* :func:`run_proxy` closes connections that send no whole request head within
  ``header_timeout`` and refuses those beyond ``max_connections``
  (:func:`recorder.http_limits.server_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import httpx2

from recorder.capture.session import (
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_EVENT_BYTES,
    CaptureError,
    CaptureSession,
    OnStoreError,
    WriterMode,
)
from recorder.capture.transport import AsyncRecordingTransport
from recorder.http_limits import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_REQUEST_BYTES,
    ServerLimits,
    Stalled,
    TooLarge,
    ensure_open_files,
    listening_socket,
    read_body,
    refusal_headers,
    server_config,
)
from recorder.redact import Redactor
from recorder.store.engine import is_process_local
from recorder.store.store import EventStore
from recorder.upstream import BadTarget, parse_upstream, upstream_url

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "RecordingProxy", "run_proxy"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


_CLIENT_GONE = "the client disconnected"


def _error_body(status: int, message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()


class RecordingProxy:
    """The ASGI app: forwards to ``upstream`` through a recording transport into ``session``."""

    def __init__(
        self,
        session: CaptureSession,
        upstream: str,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        timeout: httpx2.Timeout | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        body_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
    ) -> None:
        if max_request_bytes < 0:
            raise ValueError(f"max_request_bytes must be >= 0, got {max_request_bytes}")
        self.max_request_bytes = max_request_bytes
        self.body_timeout = body_timeout
        self.session = session
        self.upstream = parse_upstream(upstream)
        inner = transport if transport is not None else httpx2.AsyncHTTPTransport()
        self.transport = AsyncRecordingTransport(inner, session=session)
        # Code interpreter streams can pause for minutes between events.
        self.timeout = timeout or httpx2.Timeout(600.0, connect=10.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            body = await read_body(scope, receive, self.max_request_bytes, self.body_timeout)
        except (TooLarge, Stalled) as exc:
            status = 413 if isinstance(exc, TooLarge) else 408
            body = _error_body(status, str(exc), "proxy_error")
            await self._reply(send, status, body, close=status == 408)
            return
        if body is None:
            return  # gone before its body was whole: nothing to forward, no one to answer
        try:
            request = self._upstream_request(scope, body)
        except BadTarget as exc:
            await self._reply(send, exc.status, _error_body(exc.status, str(exc), "proxy_error"))
            return
        try:
            response = await self.transport.handle_async_request(request)
        except CaptureError as exc:
            await self._reply(send, 503, _error_body(503, str(exc), "codetape_capture_error"))
            return
        except httpx2.TimeoutException as exc:
            await self._reply(
                send, 504, _error_body(504, f"upstream timeout: {exc}", "proxy_error")
            )
            return
        except httpx2.TransportError as exc:
            text = f"upstream unreachable: {type(exc).__name__}: {exc}"
            await self._reply(send, 502, _error_body(502, text, "proxy_error"))
            return
        await self._relay(response, send, receive)

    def _upstream_request(self, scope: Scope, body: bytes) -> httpx2.Request:
        raw_target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        url = upstream_url(self.upstream, scope["method"], raw_target, query)
        # Bytes as received: a value with obs-text (bytes 0x80-0xFF, allowed by
        # RFC 9110) goes on unchanged; as str, httpx2 would refuse it as non-ASCII.
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _HOP_BY_HOP | {"host", "content-length"}
        ]
        timeouts = {
            "connect": self.timeout.connect,
            "read": self.timeout.read,
            "write": self.timeout.write,
            "pool": self.timeout.pool,
        }
        return httpx2.Request(
            scope["method"], url, headers=headers, content=body, extensions={"timeout": timeouts}
        )

    async def _relay(self, response: httpx2.Response, send: Send, receive: Receive) -> None:
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers.multi_items()
            if k.lower() not in _HOP_BY_HOP
        ]
        gone = asyncio.Event()
        relay = asyncio.current_task()
        assert relay is not None

        async def watch() -> None:
            # After the request body, the only message left is the disconnect.
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            # A code interpreter stream can be silent for minutes: stop waiting
            # for the upstream now, not at its next chunk. The recorder ends
            # the exchange as closed by the client, with this reason.
            relay.cancel(_CLIENT_GONE)

        watcher = asyncio.create_task(watch())
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        chunks = response.stream.__aiter__()
        try:
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone.is_set():
                raise  # the server is stopping: not ours to swallow
            relay.uncancel()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            # A client that went away mid-stream ends here too: the recorder
            # marks the exchange as closed by the client.
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
            await response.aclose()

    @staticmethod
    async def _reply(send: Send, status: int, body: bytes, close: bool = False) -> None:
        # A stalled body: the connection is closed, not waited on. (A body over
        # the limit is read on and dropped by the server: closing with its
        # bytes unread would reset the connection before the client reads the 413.)
        headers = refusal_headers() if close else [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                with contextlib.suppress(Exception):
                    await self.transport.inner.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def run_proxy(
    store: EventStore,
    upstream: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    session: str = "proxy",
    redact_headers: Iterable[str] = (),
    redact_json_paths: Iterable[str] = (),
    redactor: Redactor | None = None,
    on_store_error: OnStoreError = "log",
    writer: WriterMode = "auto",
    limits: ServerLimits | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> None:
    """Serve the proxy with uvicorn until interrupted; the session closes on exit.

    ``redactor`` replaces the default one (``redact_headers`` and
    ``redact_json_paths`` then add nothing). ``limits`` bound what clients
    may hold (request size, header timeout, connections; see
    :mod:`recorder.http_limits`), ``max_event_bytes`` and
    ``max_decoded_bytes`` what the recorder holds per exchange (see
    :class:`~recorder.capture.session.CaptureSession`).
    """
    import click
    import uvicorn

    limits = limits or ServerLimits()
    # A bad --upstream or connection limit is refused before a session is opened.
    parse_upstream(upstream)
    ensure_open_files(limits, files_per_connection=2)  # the client's and the upstream's
    if writer == "auto" and not is_process_local(store.url):
        # One event loop relays every client's stream: the recording's work
        # goes to the recorder child, off the loop's interpreter.
        writer = "process"
    # Bound before the session opens: an address in use is one clear error,
    # with nothing recorded (a session, once in the log, stays there).
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]
    try:
        capture = CaptureSession(
            store,
            session,
            redactor=redactor,
            redact_headers=redact_headers,
            redact_json_paths=redact_json_paths,
            on_store_error=on_store_error,
            labels={"source": "proxy"},
            metadata={"upstream": upstream},
            writer=writer,
            max_event_bytes=max_event_bytes,
            max_decoded_bytes=max_decoded_bytes,
        )
        try:
            app = RecordingProxy(
                capture,
                upstream,
                max_request_bytes=limits.max_request_bytes,
                body_timeout=limits.header_timeout,
            )
            click.echo(
                f"recording proxy on http://{host}:{port} -> {upstream} "
                f"(session {session!r}, id {capture.id[:12]})",
                err=True,
            )
            config = server_config(
                app,
                limits,
                files_per_connection=2,  # the client's connection and the upstream's
                host=host,
                port=port,
                log_level="warning",
                server_header=False,
                date_header=False,
            )
            _serve_until_stopped(uvicorn.Server(config), sock)
        finally:
            capture.close()
    finally:
        sock.close()


def _serve_until_stopped(server: Any, sock: socket.socket) -> None:
    """Run uvicorn; Ctrl-C or SIGTERM stop it cleanly, so the session gets closed.

    uvicorn re-raises the signal it caught once it has shut down; with the
    default SIGTERM action that would kill the process before the session's
    events are drained, so SIGTERM becomes a normal exit here.
    """

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)

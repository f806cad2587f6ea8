"""A fake Responses API for capture tests, serving recorded exchanges from fixture tapes.

The same script serves three ways: as an ``httpx2.MockTransport`` handler
(sync or async), or as an ASGI app on a real 127.0.0.1 port (uvicorn in a
thread). Each response streams its recorded SSE frames one chunk at a time, and
``before_frame(exchange_index, frame_index)`` runs before each frame is sent,
so tests can pace the stream or hold it on a barrier. Nothing here imports
the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import uvicorn

from recorder.events import EventKind
from recorder.tape import read_tape

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "realdata"

# Framing headers are recomputed by whoever serves the body.
_FRAMING = {"content-length", "transfer-encoding", "content-encoding", "connection"}

FrameHook = Callable[[int, int], None]


@dataclass
class Scripted:
    """One recorded exchange: what request it answers and the response to send."""

    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes]
    streamed: bool
    request_body: bytes = b""

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def load_tape(path: Path | str) -> list[Scripted]:
    """The exchanges of a fixture tape (relative paths are under fixtures/realdata)."""
    path = Path(path)
    if not path.is_absolute():
        path = FIXTURES / path
    by_exchange: dict[str, Scripted] = {}
    for ev in read_tape(path):
        if ev.exchange_id is None:
            continue
        if ev.kind is EventKind.REQUEST:
            url = httpx2.URL(str(ev.meta["url"]))
            by_exchange[ev.exchange_id] = Scripted(
                str(ev.meta["method"]), url.raw_path.decode(), 0, [], [], False, ev.payload
            )
        elif ev.kind is EventKind.RESPONSE_HEAD:
            x = by_exchange[ev.exchange_id]
            x.status = int(ev.meta["status"])
            x.streamed = bool(ev.meta.get("streamed"))
            x.headers = [
                (str(k), str(v)) for k, v in ev.meta["headers"] if k.lower() not in _FRAMING
            ]
            if x.streamed and not any(k.lower() == "content-type" for k, _ in x.headers):
                x.headers.append(("content-type", "text/event-stream"))
        elif ev.kind in (EventKind.SSE, EventKind.BODY):
            by_exchange[ev.exchange_id].chunks.append(ev.payload)
    return list(by_exchange.values())


def sse_response(frames: list[bytes], status: int = 200) -> Scripted:
    """A scripted SSE response made of ``frames`` (for synthetic cases)."""
    return Scripted(
        "POST", "/v1/responses", status, [("content-type", "text/event-stream")], frames, True
    )


def json_response(
    body: bytes, status: int = 200, method: str = "POST", path: str = "/v1/responses"
) -> Scripted:
    return Scripted(method, path, status, [("content-type", "application/json")], [body], False)


class MidStreamError(httpx2.ReadError):
    """What the fake raises to cut a stream (a transport error, as a reset would be)."""


@dataclass
class Upstream:
    """Answers requests with the next unserved scripted exchange of the same method and path.

    ``any_path`` serves the scripts in order whatever the request asks.
    ``fail_at`` maps an exchange index to the frame index at which its stream
    breaks with :class:`MidStreamError`.
    """

    scripts: list[Scripted]
    before_frame: FrameHook | None = None
    any_path: bool = False
    fail_at: dict[int, int] = field(default_factory=dict)
    served: list[int] = field(default_factory=list)
    requests: list[httpx2.Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, method: str, path: str) -> tuple[int, Scripted] | None:
        with self._lock:
            for index, x in enumerate(self.scripts):
                if index in self.served:
                    continue
                if self.any_path or (x.method == method and x.path.split("?")[0] == path):
                    self.served.append(index)
                    return index, x
        return None

    def _frames(self, index: int, x: Scripted) -> Iterator[bytes]:
        for k, chunk in enumerate(x.chunks):
            if self.fail_at.get(index) == k:
                raise MidStreamError("connection reset by the fake upstream")
            if self.before_frame is not None:
                self.before_frame(index, k)
            yield chunk

    # -- httpx2.MockTransport handlers --------------------------------------

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        found = self.pick(request.method, request.url.path)
        if found is None:
            return httpx2.Response(404, json={"error": {"message": "no such scripted request"}})
        index, x = found
        return httpx2.Response(x.status, headers=x.headers, stream=_SyncFrames(self, index, x))

    async def handle_async(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        found = self.pick(request.method, request.url.path)
        if found is None:
            return httpx2.Response(404, json={"error": {"message": "no such scripted request"}})
        index, x = found
        return httpx2.Response(x.status, headers=x.headers, stream=_AsyncFrames(self, index, x))

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handle)

    def async_transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handle_async)

    # -- ASGI ----------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        self.requests.append(
            httpx2.Request(scope["method"], f"http://upstream{scope['path']}", content=body)
        )
        found = self.pick(scope["method"], scope["path"])
        if found is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        index, x = found
        headers = [(k.encode(), v.encode()) for k, v in x.headers]
        await send({"type": "http.response.start", "status": x.status, "headers": headers})
        for k, chunk in enumerate(x.chunks):
            if self.fail_at.get(index) == k:
                raise RuntimeError("the fake upstream drops the connection")
            if self.before_frame is not None:
                await asyncio.to_thread(self.before_frame, index, k)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


class _SyncFrames(httpx2.SyncByteStream):
    def __init__(self, upstream: Upstream, index: int, x: Scripted) -> None:
        self._it = upstream._frames(index, x)

    def __iter__(self) -> Iterator[bytes]:
        return self._it

    def close(self) -> None:
        self._it.close()  # type: ignore[attr-defined]


class _AsyncFrames(httpx2.AsyncByteStream):
    def __init__(self, upstream: Upstream, index: int, x: Scripted) -> None:
        self._upstream = upstream
        self._index = index
        self._x = x

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._upstream._frames(self._index, self._x):
            await asyncio.sleep(0)  # let other tasks run between frames
            yield chunk


async def read_body(receive: Callable) -> bytes:  # type: ignore[type-arg]
    """The whole body of an ASGI HTTP request."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(app: object) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # lifespan "auto": an app that handles it (the proxy) closes its pools on shutdown.
    config = uvicorn.Config(app, log_level="warning", lifespan="auto", ws="none")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the test server did not start")
            threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()

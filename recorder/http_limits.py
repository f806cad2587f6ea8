"""What codetape's HTTP servers (``codetape proxy``, ``codetape serve``) allow a client.

Both are ASGI apps under uvicorn; this module holds the limits they share,
so a client cannot hold more of the server than these say:

* Request bodies: :func:`read_body` holds a body whole (both servers need it
  whole), so it refuses one larger than its limit with :class:`TooLarge` as
  soon as its ``Content-Length`` or its received bytes say so, and one whose
  bytes stop coming for ``idle_timeout`` seconds with :class:`Stalled`.
  :func:`refusal_headers` is what the 408 is sent with: it closes the
  connection rather than wait on. (A 413 leaves it open: the server reads
  the rest of the body and drops it, since closing with bytes unread resets
  the connection before the client can read the answer.)
* Connections: :func:`server_config` gives uvicorn a protocol that closes a
  connection which has not sent a whole request head within
  ``header_timeout`` seconds of opening or of its previous response
  (uvicorn's own keep-alive timeout, 5 s, is cancelled by any byte, so a
  client sending a header line now and then, or nothing at all, would
  otherwise be kept forever), and that answers 503 and closes any
  connection beyond ``max_connections`` open at once, before reading from
  it. uvicorn's ``limit_concurrency`` answers 503 only once a request has
  arrived, so idle connections would still pile up until the process runs
  out of file descriptors; here the count is of open connections, and the
  process's open-file limit is raised (within its hard limit) to fit them,
  or the server refuses to start.
* Listening: :func:`listening_socket` binds and listens before a server
  does anything else, so an address in use or a bad host is one clear
  error before any work starts, and port 0 resolves to the port the
  system picked, which the servers print.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recorder.errors import CodetapeError

if TYPE_CHECKING:
    import uvicorn

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "ServerLimits",
    "Stalled",
    "TooLarge",
    "ensure_open_files",
    "listening_socket",
    "read_body",
    "refusal_headers",
    "server_config",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

# Larger than any Responses API request (its own limit, files included, is
# well below this), small enough that a few concurrent ones fit in memory.
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# A client sends its request head at once; 20 s leaves room for a slow link.
DEFAULT_HEADER_TIMEOUT = 20.0
# Well above the concurrent streams one machine's clients open (the proxy's
# benchmark runs 64), well below the open files a process gets.
DEFAULT_MAX_CONNECTIONS = 512
# File descriptors beyond the connections: the database, the listening
# socket, the recorder child's pipes, logs.
_SPARE_FILES = 128


class TooLarge(Exception):
    """The request body is over the server's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over the server's limit of {limit} bytes")


class Stalled(Exception):
    """The request body stopped arriving."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no request body bytes arrived for {seconds:g} s")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one server allows its clients (see the module docstring)."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if self.max_request_bytes < 0:
            raise ValueError(f"max_request_bytes must be >= 0, got {self.max_request_bytes}")
        if not self.header_timeout > 0:
            raise ValueError(f"header_timeout must be > 0, got {self.header_timeout}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")


async def read_body(
    scope: Scope, receive: Receive, limit: int, idle_timeout: float | None = None
) -> bytes | None:
    """The whole request body, or None if the client left before sending it.

    Raises :class:`TooLarge` past ``limit`` bytes (declared or received) and
    :class:`Stalled` when no message arrives for ``idle_timeout`` seconds.
    """
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            # A malformed length is for the app to judge; the count below still bounds it.
            with contextlib.suppress(ValueError):
                if int(value) > limit:
                    raise TooLarge(limit)
    body = bytearray()
    while True:
        try:
            message = await asyncio.wait_for(receive(), idle_timeout)
        except TimeoutError:
            raise Stalled(idle_timeout or 0.0) from None
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise TooLarge(limit)
        if not message.get("more_body"):
            return bytes(body)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening; :class:`CodetapeError` if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CodetapeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # Listen now: the banner giving the address is printed before uvicorn
    # starts, and a client that connects in between must queue, not be refused.
    sock.listen(socket.SOMAXCONN)
    sock.set_inheritable(True)
    return sock


def refusal_headers(content_type: bytes = b"application/json") -> list[tuple[bytes, bytes]]:
    """Headers of a refusal after which the connection is closed (a 408)."""
    return [(b"content-type", content_type), (b"connection", b"close")]


def ensure_open_files(limits: ServerLimits, files_per_connection: int = 1) -> None:
    """Raise this process's open-file limit to fit ``limits.max_connections`` (within the
    hard limit); :class:`CodetapeError` when it cannot."""
    needed = limits.max_connections * files_per_connection + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise CodetapeError(
            f"this process may open only {soft} files (ulimit -n), and {needed} are needed "
            "for the connection limit: lower --max-connections or raise the limit"
        )


def server_config(
    app: Any, limits: ServerLimits, *, files_per_connection: int = 1, **options: Any
) -> uvicorn.Config:
    """A uvicorn config serving ``app`` under ``limits`` (``options`` go to uvicorn.Config).

    ``files_per_connection``: open files one client connection may cost (2 for
    the proxy: the client's and the upstream's).
    """
    import uvicorn

    ensure_open_files(limits, files_per_connection)
    return uvicorn.Config(app, http=_guarded_protocol(limits), **options)


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def _guarded_protocol(limits: ServerLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline for request heads and a connection cap."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = b'{"error":{"message":"too many connections open","type":"server_busy","code":503}}'
    busy = _BUSY % (len(body), body)

    class GuardedH11Protocol(H11Protocol):
        # Relies on H11Protocol's connections (the server's open set), conn
        # (the h11 state machine) and transport, as its own timers do.
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                # Refused before anything is read: the file is freed at once.
                transport.write(busy)
                transport.close()
                return
            self._wait_for_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._head_arrived()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._wait_for_head()  # kept alive: the next request's head is due in time too

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_arrived()
            super().connection_lost(exc)

        def _wait_for_head(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_late)

        def _head_arrived(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol

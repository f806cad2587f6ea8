"""A hostile upstream and hostile clients against ``codetape proxy``: bounded memory, connections.

The proxy runs as the real command in a subprocess (its peak memory is read
from ``/proc``); the upstream is a raw asyncio server on 127.0.0.1 sending
what no real API would: an SSE frame that never ends, gzip bombs, a huge
JSON body to redact. The client must still get every byte, the recording
must stop as a visible capture gap, and the proxy's peak memory must stay
far below the size of what was relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_upstream import free_port

from recorder.store import EventStore, migrate

MiB = 1024 * 1024
SIZE = 96 * MiB  # what the upstream sends (decoded); far more than the proxy may hold
EVENT_LIMIT = "4MiB"
# Peak growth allowed: the event limit a few times over (the splitter's buffer,
# a copy), the 1 MiB decoding steps, allocator slack. The old proxy held all 96 MiB.
MAX_GROWTH = 48 * MiB


def _gzip(head: bytes, size: int, tail: bytes = b"") -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"a" * MiB
    parts = [c.compress(head)]
    parts += [c.compress(block) for _ in range(size // MiB)]
    parts += [c.compress(tail), c.flush()]
    return b"".join(parts)


class HostileUpstream:
    """A raw HTTP/1.1 server: ``/nolines`` (SSE, no blank line ever), ``/gzipsse``
    (a gzip'd SSE frame without end), ``/gzipjson`` (a gzip'd JSON object),
    anything else a small complete stream."""

    def __init__(self) -> None:
        self.bodies = {
            "/gzipsse": (b"text/event-stream", _gzip(b"data: ", SIZE)),
            "/gzipjson": (b"application/json", _gzip(b'{"a":"', SIZE, b'"}')),
        }
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._started.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode().split("?")[0]
            if path.endswith("/nolines"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"content-length: %d\r\n\r\ndata: " % (SIZE + 6)
                )
                block = b"a" * MiB
                for _ in range(SIZE // MiB):
                    writer.write(block)
                    await writer.drain()
            elif any(path.endswith(name) for name in self.bodies):
                kind, body = next(v for k, v in self.bodies.items() if path.endswith(k))
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-encoding: gzip\r\n"
                    b"content-length: %d\r\n\r\n%s" % (kind, len(body), body)
                )
            else:
                frame = (
                    b"event: response.completed\ndata: "
                    b'{"type":"response.completed","sequence_number":0,'
                    b'"response":{"id":"resp_1","status":"completed"}}\n\n'
                )
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(frame), frame)
                )
            await writer.drain()
        writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    for _ in range(3000):
        assert proc.poll() is None, proc.communicate()[1]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise AssertionError("the proxy did not start")


@contextlib.contextmanager
def _proxy(db_url: str, upstream: str, *options: str) -> Iterator[tuple[int, int]]:
    """``codetape proxy`` in a subprocess: (its port, its pid); stopped with SIGTERM."""
    port = free_port()
    command = ["proxy", "--session", "hostile", "--listen", f"127.0.0.1:{port}"]
    command += ["--upstream", upstream, *options]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from recorder.cli import main; main()", *command, "--db", db_url],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, proc)
        yield port, proc.pid
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def _get(port: int, path: str, timeout: float = 120) -> tuple[bytes, int]:
    """GET ``path``: the response head and how many body bytes followed, read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % path.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            piece = s.recv(65536)
            assert piece, data
            data += piece
        head, _, rest = data.partition(b"\r\n\r\n")
        got = len(rest)
        while piece := s.recv(MiB):
            got += len(piece)
    return head, got


def _peaks(pid: int) -> list[int]:
    """VmHWM (bytes) of ``pid`` and of its children (the recorder child)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    peaks = []
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) * 1024)
    return peaks


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "options", "wire_size"),
    [
        ("/v1/nolines", (), SIZE + 6),
        ("/v1/gzipsse", (), None),
        ("/v1/gzipjson", ("--redact-json", "metadata.user"), None),
    ],
    ids=["frame-without-end", "gzip-bomb-sse", "gzip-json-to-redact"],
)
def test_a_hostile_response_is_relayed_whole_in_bounded_memory(
    sqlite_url: str, path: str, options: tuple[str, ...], wire_size: int | None
) -> None:
    migrate.upgrade(sqlite_url)
    upstream = HostileUpstream()
    if wire_size is None:
        wire_size = len(upstream.bodies[path.removeprefix("/v1")][1])
    try:
        with _proxy(
            sqlite_url,
            f"http://127.0.0.1:{upstream.port}",
            "--max-event-size",
            EVENT_LIMIT,
            *options,
        ) as (port, pid):
            head, _ = _get(port, "/v1/normal")  # the recorder child is up
            assert head.startswith(b"HTTP/1.1 200")
            before = _peaks(pid)
            head, got = _get(port, path)
            after = _peaks(pid)
    finally:
        upstream.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert got == wire_size  # every byte of the upstream's reached the client
    growth = [b - a for a, b in zip(before, after, strict=True)]
    assert max(growth) < MAX_GROWTH, [g // MiB for g in growth]
    with EventStore.open(sqlite_url) as store:
        session = store.find_session("hostile")
        normal, hostile = store.exchanges(session.id)
        assert normal.outcome == "completed"
        assert hostile.outcome == "interrupted"
        assert "recording stopped" in (hostile.reason or "")
        report = store.verify()
        assert report.ok and report.capture_gaps == 1 and report.open_exchanges == []


@pytest.mark.slow
def test_idle_and_surplus_connections_are_closed(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    upstream = HostileUpstream()
    try:
        with _proxy(
            sqlite_url,
            f"http://127.0.0.1:{upstream.port}",
            "--max-connections",
            "3",
            "--header-timeout",
            "3",
        ) as (port, _pid):
            # Served (so the connection that found the port open is gone), then three held.
            assert _get(port, "/v1/normal")[0].startswith(b"HTTP/1.1 200")
            idle = socket.create_connection(("127.0.0.1", port), timeout=30)
            partial = socket.create_connection(("127.0.0.1", port), timeout=30)
            partial.sendall(b"GET /v1/normal HTTP/1.1\r\nhost: x\r\n")
            held = socket.create_connection(("127.0.0.1", port), timeout=30)
            time.sleep(0.2)  # the three are accepted before the next one
            with socket.create_connection(("127.0.0.1", port), timeout=30) as surplus:
                surplus.sendall(b"GET /v1/normal HTTP/1.1\r\nhost: x\r\n\r\n")
                refused = surplus.recv(65536)
            for s in (idle, partial):
                # Closed by the proxy once the head timeout passed (the 30 s
                # socket timeout only keeps a failing test from hanging).
                assert s.recv(100) == b""
                s.close()
            held.close()
            # A client that keeps sending header lines, never the end of its head, is closed too.
            slow = socket.create_connection(("127.0.0.1", port), timeout=30)
            slow.sendall(b"GET /v1/normal HTTP/1.1\r\n")
            with contextlib.suppress(OSError):
                for _ in range(40):
                    slow.sendall(b"x-a: b\r\n")
                    time.sleep(0.1)
            assert slow.recv(100) == b""
            slow.close()
            head, _ = _get(port, "/v1/normal")
    finally:
        upstream.close()
    assert refused.startswith(b"HTTP/1.1 503") and b"too many connections" in refused
    assert head.startswith(b"HTTP/1.1 200")


def test_decoding_a_bomb_lets_the_event_loop_run(sqlite_url: str) -> None:
    """A small gzip'd chunk that decodes to many MiB is recorded a piece at a time,
    the loop serving others in between (the old recorder decoded it in one go)."""
    import httpx2

    from recorder.capture import AsyncRecordingTransport, CaptureSession

    bomb = _gzip(b"data: ", 32 * MiB)

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", "content-encoding": "gzip"}
        return httpx2.Response(200, headers=headers, stream=_once(bomb))  # type: ignore[arg-type]

    async def run() -> tuple[int, int]:
        session = CaptureSession(sqlite_url, "bomb", max_event_bytes=64 * MiB)
        transport = AsyncRecordingTransport(httpx2.MockTransport(handler), session=session)
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        async with (
            httpx2.AsyncClient(transport=transport) as client,
            client.stream("GET", "http://upstream/v1/x") as response,
        ):
            relayed = sum([len(chunk) async for chunk in response.aiter_raw()])
        done.set()
        await task
        await asyncio.to_thread(session.close)
        return ticks, relayed

    migrate.upgrade(sqlite_url)
    ticks, relayed = asyncio.run(run())
    assert relayed == len(bomb)
    assert ticks >= 16  # at least one turn per couple of decoded MiB


def _once(data: bytes) -> object:
    """An httpx2 async byte stream of one chunk."""
    import httpx2

    class Once(httpx2.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield data

    return Once()

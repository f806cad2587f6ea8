"""``writer="process"``: the recording work runs in a child process, off the client's cores.

With the default thread writer, the SSE splitting, event building, hashing and
inserts share the client's interpreter (and its GIL) with the SDK. In process
mode the client process only *taps*: each request, response head and body
chunk is put, with its arrival time, on a queue that a sender thread pipes
(``marshal``, one write per burst) to a child ``python -m
recorder.capture.worker``. The child runs an ordinary
:class:`~recorder.capture.session.CaptureSession`, so the events are exactly
those of thread mode (same builders, same offsets, same outcomes).

Guarantees: the tap never waits for the child or the database (strict mode
aside, which waits for acknowledgements exactly where thread mode waits for
commits). If the client process dies, the child reads end-of-file, stores
everything it received and exits without closing anything, so ``repair``
later marks the open exchanges interrupted; the session's recorder identity
names the child too, and repair waits until both processes are gone. If the
child dies, the client's calls go on unrecorded and the loss is logged (in
strict mode, the next call raises :class:`CaptureError`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import marshal
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

from recorder.capture.session import (
    CaptureError,
    CaptureSession,
    CaptureStats,
    ExchangeRecorder,
    early_close,
    failure_ending,
    sync_before_sending,
)
from recorder.errors import CodetapeError
from recorder.events import Outcome, new_id
from recorder.redact import Redactor
from recorder.repair import writer_identity

__all__ = ["RemoteExchange", "WriterProcess"]

log = logging.getLogger("codetape.capture")

_SEND_LINGER = 0.005
_STATS_FIELDS = [f.name for f in dataclasses.fields(CaptureStats)]


def _stats_tuple(stats: CaptureStats) -> tuple[Any, ...]:
    return tuple(getattr(stats, name) for name in _STATS_FIELDS)


class WriterProcess:
    """The client side of the child process: a message queue, a sender and a reply reader."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._replies: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._tokens = 0
        self._lock = threading.Lock()
        self.failed: str | None = None
        self._closing = False
        self.session_id = ""
        self.stats = CaptureStats(0, 0, 0, 0, 0, 0, 0, 0, None)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "recorder.capture.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self._stdout: IO[bytes] = self._proc.stdout
        self._sender = threading.Thread(target=self._send_loop, name="codetape-tap", daemon=True)
        self._reader = threading.Thread(target=self._read_loop, name="codetape-acks", daemon=True)
        self._sender.start()
        self._reader.start()
        reply = self.request("open", config, timeout=120.0)
        if reply is None or reply[0] != "ok":
            message = reply[1] if reply else "the recorder process did not start"
            self._closing = True
            self._shutdown()
            raise CodetapeError(str(message))
        self.session_id = str(reply[1])

    def send(self, message: tuple[Any, ...]) -> None:
        # deque.append is atomic; the Event wakes the sender only when it sleeps.
        self._queue.append(message)
        if not self._wake.is_set():
            self._wake.set()

    def request(self, kind: str, *args: Any, timeout: float = 60.0) -> tuple[Any, ...] | None:
        """Send ``kind`` and wait for the child's reply (everything queued before is handled)."""
        if not self._reader.is_alive():
            return ("error", self.failed or "the recorder process exited")
        with self._lock:
            self._tokens += 1
            token = self._tokens
            done = threading.Event()
            slot: list[Any] = []
            self._replies[token] = (done, slot)
        self.send((kind, token, *args))
        if not done.wait(timeout):
            return None
        result: tuple[Any, ...] = slot[0]
        return result

    def _send_loop(self) -> None:
        queue = self._queue
        while True:
            self._wake.wait()
            # Gather a burst: one pipe write per few ms, not one per chunk
            # (each write and thread switch costs the client more than the chunk).
            time.sleep(_SEND_LINGER)
            self._wake.clear()
            batch = []
            while queue:
                batch.append(queue.popleft())
            if not batch:
                continue
            try:
                marshal.dump(batch, self._stdin)
                self._stdin.flush()
            except (OSError, ValueError) as exc:
                self._lost(f"the recorder process is gone ({type(exc).__name__})")
                return
            if any(m[0] == "C" for m in batch):
                return

    def _read_loop(self) -> None:
        while True:
            try:
                reply = marshal.load(self._stdout)
            except (EOFError, OSError, ValueError):
                self._lost("the recorder process exited")
                return
            kind = reply[0]
            if kind == "stats":
                self.stats = CaptureStats(*reply[1])
            elif kind == "failed":
                self.failed = str(reply[1])
                self.stats = CaptureStats(*reply[2])
            else:
                token = reply[1]
                with self._lock:
                    waiting = self._replies.pop(token, None)
                if len(reply) > 3:
                    self.stats = CaptureStats(*reply[3])
                if waiting is not None:
                    waiting[1].append((kind, *reply[2:]))
                    waiting[0].set()

    def _lost(self, why: str) -> None:
        if self.failed is None and not self._closing:
            self.failed = why
            log.warning("codetape: %s; calls continue unrecorded", why)
        with self._lock:
            waiting = list(self._replies.values())
            self._replies.clear()
        for done, slot in waiting:
            slot.append(("error", why))
            done.set()

    def close(self, reason: str | None) -> None:
        self._closing = True
        reply = self.request("C", reason, timeout=120.0)
        if reply is None:
            log.error("codetape: the recorder process did not finish in time")
        self._shutdown()

    def _shutdown(self) -> None:
        self._wake.set()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._sender.join(5)
        self._reader.join(5)
        self._stdin.close()
        self._stdout.close()


class RemoteExchange:
    """The tap for one exchange: the same calls as :class:`ExchangeRecorder`, sent to the child."""

    __slots__ = ("_ended", "_proc", "_send", "_session", "_t0", "id")

    def __init__(self, session: CaptureSession, proc: WriterProcess) -> None:
        self.id = new_id()
        self._session = session
        self._proc = proc
        self._send = proc.send
        self._t0 = 0
        self._ended = False

    @property
    def strict(self) -> bool:
        return self._session.strict

    @property
    def ended(self) -> bool:
        return self._ended

    def _check(self) -> None:
        if self._session.strict and self._proc.failed is not None:
            raise CaptureError(self._session._failure_message("recording"))

    def start(self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        self._t0 = time.perf_counter_ns()
        pairs = [[k, v] for k, v in headers]
        self._send(("s", self.id, method, url, pairs, body, time.time_ns()))

    def response(self, status: int, headers: list[tuple[str, str]], http_version: str) -> None:
        offset = time.perf_counter_ns() - self._t0
        pairs = [[k, v] for k, v in headers]
        self._send(("r", self.id, status, pairs, http_version, offset))

    def feed(self, chunk: bytes) -> None:
        # The hot path of process mode: a clock read and a queue append.
        self._send(("f", self.id, bytes(chunk), time.perf_counter_ns() - self._t0))
        if self._proc.failed is not None:
            self._check()

    def already_read(self, content: bytes) -> None:
        self._send(("d", self.id, bytes(content), time.perf_counter_ns() - self._t0))
        self.finish()

    def finish(self) -> None:
        if not self._ended:
            self._ended = True
            self._send(("e", self.id, time.perf_counter_ns() - self._t0))

    def _end(self, message: tuple[Any, ...]) -> None:
        if not self._ended:
            self._ended = True
            self._send(message)

    def fail(self, exc: BaseException) -> None:
        outcome, reason, details = failure_ending(exc)
        offset = time.perf_counter_ns() - self._t0
        self._end(("x", self.id, outcome.value, reason, details, offset))

    def close_early(self) -> None:
        if self._ended:
            return
        reason, details = early_close(sys.exc_info()[1])
        self._end(("c", self.id, reason, details, time.perf_counter_ns() - self._t0))

    def interrupt(self, reason: str) -> None:
        self._end(("i", self.id, reason, time.perf_counter_ns() - self._t0))

    def sync_start(self) -> None:
        sync_before_sending(self._session, self.fail)

    def sync_end(self) -> None:
        self._session.sync("ending an exchange")


# -- the child process ---------------------------------------------------------


class _Child:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.session: CaptureSession | None = None
        self.exchanges: dict[str, ExchangeRecorder] = {}
        self.failed = False

    def reply(self, message: tuple[Any, ...]) -> None:
        marshal.dump(message, self.out)
        self.out.flush()

    def stats(self) -> tuple[Any, ...]:
        assert self.session is not None
        return _stats_tuple(self.session.stats)

    def open(self, token: int, config: dict[str, Any]) -> None:
        try:
            redactor = Redactor(
                headers=frozenset(config.pop("redact_headers")),
                query_params=frozenset(config.pop("redact_query_params")),
                json_paths=tuple(tuple(p) for p in config.pop("redact_json_paths")),
            )
            identity = config.pop("identity")
            identity["writer"] = {
                k: v for k, v in writer_identity().items() if k in ("pid", "start_ticks")
            }
            self.session = CaptureSession(
                config.pop("url"),
                config.pop("name"),
                redactor=redactor,
                writer="thread",
                recorder_identity=identity,
                **config,
            )
        except CodetapeError as exc:
            self.reply(("error", token, str(exc)))
            return
        self.reply(("ok", token, self.session.id))

    def handle(self, message: tuple[Any, ...]) -> bool:
        """Apply one message; False when the session is closed and the child should exit."""
        kind = message[0]
        session = self.session
        if kind == "open":
            self.open(message[1], message[2])
            return True
        assert session is not None
        if kind == "F":
            _, token, fail_fast, timeout = message
            ok = session.writer.flush(timeout, fail_fast=fail_fast)
            self.reply(("ok", token, ok, self.stats()))
            return True
        if kind == "C":
            session.close(message[2])
            self.reply(("ok", message[1], True, self.stats()))
            return False
        xid = message[1]
        if kind == "s":
            x = ExchangeRecorder(session)
            x.id = xid
            self.exchanges[xid] = x
            x.start(
                message[2],
                message[3],
                [(k, v) for k, v in message[4]],
                message[5],
                wall_ns=message[6],
            )
            return True
        x = self.exchanges[xid]
        if kind == "f":
            x.feed(message[2], offset=message[3])
            return True
        if kind == "r":
            x.response(message[2], [(k, v) for k, v in message[3]], message[4], offset=message[5])
            return True
        if kind == "d":
            x.feed(message[2], offset=message[3])
            return True
        del self.exchanges[xid]
        if kind == "e":
            x.finish(offset=message[2])
        elif kind == "x":
            x.end(Outcome(message[2]), message[3], message[4], offset=message[5])
        elif kind == "c":
            x.closed_early(message[2], message[3], offset=message[4])
        elif kind == "i":
            x.interrupt(message[2], offset=message[3])
        return True


def main() -> None:
    # Ctrl-C reaches the whole process group; the child must outlive it to drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by accident goes to stderr, not the reply pipe
    child = _Child(out)
    stdin = sys.stdin.buffer
    running = True
    while running:
        try:
            batch = marshal.load(stdin)
        except (EOFError, ValueError):
            break  # the client process is gone
        for message in batch:
            try:
                running = child.handle(message)
            except CaptureError as exc:
                if not child.failed:
                    child.failed = True
                    child.reply(("failed", str(exc), child.stats()))
            if not running:
                break
    if running and child.session is not None:
        # End of input without a close: store what arrived, close nothing.
        child.session.writer.close()
        if child.session._owns_store:
            child.session.store.close()
    out.close()


if __name__ == "__main__":
    main()

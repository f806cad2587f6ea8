"""``writer="process"``: the recording work runs in a child process, off the client's cores.

With the thread writer, the SSE splitting, event building, hashing and inserts
share the client's interpreter (and its GIL) with the SDK. In process mode the
client process only *taps*: each request, response head and body chunk is
put, with its arrival time, on a queue that a sender thread pipes
(``marshal``, one write per burst) to a child ``python -m
recorder.capture.worker``. The child runs ordinary
:class:`~recorder.capture.session.CaptureSession` objects, so the events are
exactly those of thread mode (same builders, same offsets, same outcomes).

One child serves every process-mode session of a client process (whatever
their stores): it starts with the first such session (about 0.3 s, mostly
imports), stays for the next ones, and is drained and stopped when the
interpreter exits. A forked client process starts its own.

Guarantees: the tap never waits for the child or the database (strict mode
aside, which waits for acknowledgements exactly where thread mode waits for
commits). If the client process dies, the child reads end-of-file, stores
everything it received, gives up its sessions' leases (the child holds them:
it writes the events) and exits without closing anything, so ``repair`` then
marks the open exchanges interrupted. If the
child dies, the client's calls go on unrecorded and the loss is logged (in
strict mode, the next call raises :class:`CaptureError`); the next session
starts a new child.
"""

from __future__ import annotations

import atexit
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
from recorder.lease import abandon_leases
from recorder.redact import Redactor
from recorder.repair import writer_identity
from recorder.store.store import EventStore

__all__ = ["RemoteExchange", "RemoteSession", "WriterProcess", "shared_worker"]

log = logging.getLogger("codetape.capture")

# The sender gathers a burst for this long: one pipe write per few hundred
# chunks, not one per chunk (each write and thread switch costs the client more
# than the chunk). It adds to the loss window, well inside the documented 200 ms.
_SEND_LINGER = 0.02
_STOP_TIMEOUT = 60.0
_STATS_TIMEOUT = 5.0
# Messages waiting for the pipe before the tap holds the client back: far more
# than a burst (the sender empties the queue every few ms), a few MB at most for
# a stream's chunks.
_MAX_QUEUED = 4096
_STATS_FIELDS = [f.name for f in dataclasses.fields(CaptureStats)]
_NO_STATS = CaptureStats(0, 0, 0, 0, 0, 0, 0, 0, None)


def _stats_tuple(stats: CaptureStats) -> tuple[Any, ...]:
    return tuple(getattr(stats, name) for name in _STATS_FIELDS)


class WriterProcess:
    """The client side of the child process: a message queue, a sender and a reply reader."""

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake = threading.Event()
        self._replies: dict[int, tuple[threading.Event, list[Any]]] = {}
        self._tokens = 0
        self._lock = threading.Lock()
        self._sessions: dict[str, RemoteSession] = {}
        self._stopping = False
        self._idle = False
        self._urgent = threading.Event()
        self.max_queued = _MAX_QUEUED
        self.failed: str | None = None  # why the child is lost to us; then nothing is sent
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

    @property
    def pid(self) -> int:
        return self._proc.pid

    def open_session(self, config: dict[str, Any]) -> RemoteSession:
        """Open a session in the child; raises :class:`CodetapeError` if the child refuses."""
        reply = self.request("open", config, timeout=120.0)
        if reply is None or reply[0] != "ok":
            message = reply[1] if reply else "the recorder process did not answer"
            raise CodetapeError(str(message))
        session = RemoteSession(self, str(reply[1]))
        with self._lock:
            self._sessions[session.session_id] = session
            session.failed = self.failed
        return session

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def send(self, message: tuple[Any, ...]) -> None:
        if self.failed is not None:
            return  # nobody would ever read it: do not let the queue grow
        # deque.append is atomic; the sender needs waking only when it went idle.
        queue = self._queue
        queue.append(message)
        if self._idle:
            self._wake.set()
        if len(queue) > self.max_queued:
            self._hold_back()

    def _hold_back(self) -> None:
        # The queue only grows while the pipe is full: the child is held back by
        # a slow (healthy) store, whose writer makes it wait. Wait too, at most
        # a second at a time as the thread writer does, so memory stays flat.
        deadline = time.monotonic() + 1.0
        while len(self._queue) > self.max_queued and self.failed is None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.001)

    def request(self, kind: str, *args: Any, timeout: float = 60.0) -> tuple[Any, ...] | None:
        """Send ``kind`` and wait for the child's reply (everything queued before is handled).

        The reply is ``(status, *values)``; ``None`` when it did not come in time.
        """
        if self.failed is not None:
            return ("error", self.failed)
        with self._lock:
            self._tokens += 1
            token = self._tokens
            done = threading.Event()
            slot: list[Any] = []
            self._replies[token] = (done, slot)
        self.send((kind, token, *args))
        self._urgent.set()
        if not done.wait(timeout):
            return None
        result: tuple[Any, ...] = slot[0]
        return result

    def _send_loop(self) -> None:
        queue = self._queue
        while True:
            if not queue and not self._stopping:
                self._idle = True
                # Checked again once idleness is published: an append that saw
                # the sender busy is not left waiting.
                if not queue:
                    self._wake.wait()
                self._wake.clear()
                self._idle = False
            # Gather a burst, unless someone waits for an answer (a request, the stop).
            self._urgent.wait(_SEND_LINGER)
            self._urgent.clear()
            batch = []
            while queue:
                batch.append(queue.popleft())
            try:
                if batch:
                    marshal.dump(batch, self._stdin)
                    self._stdin.flush()
                if self._stopping and not queue:
                    self._stdin.close()  # end of input: the child stores what it has and exits
                    return
            except (OSError, ValueError) as exc:
                self._lost(f"the recorder process is gone ({type(exc).__name__})")
                return

    def _read_loop(self) -> None:
        while True:
            try:
                reply = marshal.load(self._stdout)
            except (EOFError, OSError, ValueError):
                self._lost("the recorder process exited")
                return
            if reply[0] == "failed":
                _, session_id, message, stats = reply
                with self._lock:
                    session = self._sessions.get(session_id)
                if session is not None:
                    session.failed = str(message)
                    session.stats = CaptureStats(*stats)
                continue
            with self._lock:
                waiting = self._replies.pop(reply[1], None)
            if waiting is not None:
                waiting[1].append((reply[0], *reply[2:]))
                waiting[0].set()

    def _lost(self, why: str) -> None:
        with self._lock:
            if self.failed is None:
                self.failed = why
                if not self._stopping:
                    log.warning("codetape: %s; calls continue unrecorded", why)
            for session in self._sessions.values():
                if session.failed is None:
                    session.failed = why
            waiting = list(self._replies.values())
            self._replies.clear()
        for done, slot in waiting:
            slot.append(("error", why))
            done.set()

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Hand over everything queued, end the child's input and wait until it has stored it.

        Sessions still open stay open in the log (``repair`` closes them later).
        """
        self._stopping = True
        self._wake.set()
        self._urgent.set()
        self._sender.join(timeout)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("codetape: the recorder process did not finish in %.0f s", timeout)
            self._proc.kill()
            self._proc.wait()
        self._reader.join(5)
        self._stdout.close()

    def forked(self) -> None:
        """In a forked child: this pipe belongs to the parent. Drop it without a byte written."""
        self.failed = "the client process forked; this copy records nothing"
        for session in self._sessions.values():
            session.failed = self.failed
        self._queue.clear()
        # Pointing the descriptors at /dev/null (not closing them) keeps the
        # file objects valid and lets the parent's child see end-of-file once
        # the parent alone is gone; a buffered flush at exit goes nowhere.
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for stream in (self._stdin, self._stdout):
                os.dup2(null, stream.fileno())
        finally:
            os.close(null)


class RemoteSession:
    """A session held by the child: its id, its last reported stats, and whether it failed."""

    __slots__ = ("_worker", "failed", "send", "session_id", "stats")

    def __init__(self, worker: WriterProcess, session_id: str) -> None:
        self._worker = worker
        self.session_id = session_id
        self.send = worker.send
        self.failed: str | None = None
        self.stats = _NO_STATS

    def request(self, kind: str, *args: Any, timeout: float) -> tuple[Any, ...] | None:
        reply = self._worker.request(kind, self.session_id, *args, timeout=timeout)
        if reply is not None and reply[0] == "ok" and len(reply) > 2:
            self.stats = CaptureStats(*reply[2])
        return reply

    def current_stats(self) -> CaptureStats:
        """Asks the child; its last report when it does not answer promptly (or is gone)."""
        if self.failed is None:
            self.request("S", timeout=_STATS_TIMEOUT)
        return self.stats

    def flush(self, timeout: float | None, *, fail_fast: bool) -> bool:
        wait = 3600.0 if timeout is None else timeout
        reply = self.request("F", fail_fast, timeout, timeout=wait + 5)
        return reply is not None and reply[0] == "ok" and bool(reply[1])

    def close(self, reason: str | None) -> None:
        try:
            if self.request("C", reason, timeout=120.0) is None:
                log.error("codetape: the recorder process did not close the session in time")
        finally:
            self._worker.forget(self.session_id)


_shared: WriterProcess | None = None
_shared_lock = threading.Lock()


def shared_worker() -> WriterProcess:
    """This process's recorder child, started now if there is none (or it died)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.failed is not None:
            _shared = WriterProcess()
        return _shared


@atexit.register
def _stop_shared() -> None:
    global _shared
    with _shared_lock:
        worker, _shared = _shared, None
    if worker is not None:
        worker.stop()


def _after_fork_in_child() -> None:
    global _shared
    worker, _shared = _shared, None
    if worker is not None:
        worker.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RemoteExchange:
    """The tap for one exchange: the same calls as :class:`ExchangeRecorder`, sent to the child."""

    __slots__ = ("_ended", "_remote", "_send", "_session", "_t0", "id")

    def __init__(self, session: CaptureSession, remote: RemoteSession) -> None:
        self.id = new_id()
        self._session = session
        self._remote = remote
        self._send = remote.send
        self._t0 = 0
        self._ended = False

    @property
    def strict(self) -> bool:
        return self._session.strict

    @property
    def ended(self) -> bool:
        return self._ended

    def _check(self) -> None:
        if self._session.strict and self._remote.failed is not None:
            raise CaptureError(self._session._failure_message("recording"))

    def start(self, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        self._t0 = time.perf_counter_ns()
        pairs = [[k, v] for k, v in headers]
        self._send(
            ("s", self.id, self._remote.session_id, method, url, pairs, body, time.time_ns())
        )

    def response(self, status: int, headers: list[tuple[str, str]], http_version: str) -> None:
        offset = time.perf_counter_ns() - self._t0
        pairs = [[k, v] for k, v in headers]
        self._send(("r", self.id, status, pairs, http_version, offset))

    def feed(self, chunk: bytes) -> None:
        # The hot path of process mode: a clock read and a queue append.
        self._send(("f", self.id, bytes(chunk), time.perf_counter_ns() - self._t0))
        if self._remote.failed is not None:
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
        self.sessions: dict[str, CaptureSession] = {}
        self.stores: dict[str, EventStore] = {}
        self.urls: dict[str, str] = {}  # session id -> its key in self.stores
        self.exchanges: dict[str, ExchangeRecorder] = {}
        self.failed: set[str] = set()

    def reply(self, message: tuple[Any, ...]) -> None:
        marshal.dump(message, self.out)
        self.out.flush()

    def open(self, token: int, config: dict[str, Any]) -> None:
        url = config.pop("url")
        try:
            store = self.stores.get(url)
            if store is None:
                store = self.stores[url] = EventStore.open(url)
            redactor = Redactor.from_config(config.pop("redactor"))
            identity = config.pop("identity")
            identity["writer"] = {
                k: v for k, v in writer_identity().items() if k in ("pid", "start_ticks")
            }
            session = CaptureSession(
                store,
                config.pop("name"),
                redactor=redactor,
                writer="thread",
                recorder_identity=identity,
                **config,
            )
        except CodetapeError as exc:
            self._release(url)
            self.reply(("error", token, str(exc)))
            return
        self.sessions[session.id] = session
        self.urls[session.id] = url
        self.reply(("ok", token, session.id))

    def _release(self, url: str) -> None:
        # A long test run records into many short-lived databases (a temporary
        # one per tape): a store no session uses is closed, not kept open.
        store = self.stores.get(url)
        if store is None or any(s.store is store for s in self.sessions.values()):
            return
        del self.stores[url]
        store.close()

    def handle(self, message: tuple[Any, ...]) -> None:
        """Apply one message; a store failure in strict mode is reported for its session."""
        kind = message[0]
        if kind == "open":
            self.open(message[1], message[2])
            return
        if kind in ("F", "C", "S", "s"):
            session = self.sessions[message[2]]
        else:
            session = self.exchanges[message[1]]._session
        try:
            self._apply(kind, message, session)
        except CaptureError as exc:
            if session.id not in self.failed:
                self.failed.add(session.id)
                self.reply(("failed", session.id, str(exc), _stats_tuple(session.stats)))

    def _apply(self, kind: str, message: tuple[Any, ...], session: CaptureSession) -> None:
        if kind == "F":
            _, token, _sid, fail_fast, timeout = message
            ok = session.writer.flush(timeout, fail_fast=fail_fast)
            self.reply(("ok", token, ok, _stats_tuple(session.stats)))
            return
        if kind == "S":
            self.reply(("ok", message[1], True, _stats_tuple(session.stats)))
            return
        if kind == "C":
            del self.sessions[session.id]
            try:
                session.close(message[3])
            finally:
                self._release(self.urls.pop(session.id))
            self.reply(("ok", message[1], True, _stats_tuple(session.stats)))
            return
        xid = message[1]
        if kind == "s":
            x = ExchangeRecorder(session)
            x.id = xid
            self.exchanges[xid] = x
            x.start(
                message[3],
                message[4],
                [(k, v) for k, v in message[5]],
                message[6],
                wall_ns=message[7],
            )
            return
        x = self.exchanges[xid]
        if kind == "f":
            x.feed(message[2], offset=message[3])
            return
        if kind == "d":
            x.already_read(message[2], offset=message[3], finish=False)
            return
        if kind == "r":
            x.response(message[2], [(k, v) for k, v in message[3]], message[4], offset=message[5])
            return
        del self.exchanges[xid]
        if kind == "e":
            x.finish(offset=message[2])
        elif kind == "x":
            x.end(Outcome(message[2]), message[3], message[4], offset=message[5])
        elif kind == "c":
            x.closed_early(message[2], message[3], offset=message[4])
        elif kind == "i":
            x.interrupt(message[2], offset=message[3])

    def finish(self) -> None:
        """End of input: store what arrived for every open session, close nothing."""
        for session in self.sessions.values():
            session.writer.close()
        for store in self.stores.values():
            # Nothing more will be written to the sessions left open: their
            # leases may expire now, so a repair need not wait for them.
            abandon_leases(store)
            store.close()


def main() -> None:
    # Ctrl-C reaches the whole process group; the child must outlive it to drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by accident goes to stderr, not the reply pipe
    child = _Child(out)
    stdin = sys.stdin.buffer
    while True:
        try:
            batch = marshal.load(stdin)
        except (EOFError, ValueError):
            break  # the client process is done or gone
        for message in batch:
            try:
                child.handle(message)
            except Exception:
                # One bad message must not cost the other sessions their records.
                log.exception("codetape: the recorder process could not apply %r", message[:2])
    child.finish()
    out.close()


if __name__ == "__main__":
    main()

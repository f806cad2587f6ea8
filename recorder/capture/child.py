"""``writer="process"``: a session's events stored by this process's recorder child.

The client's threads build events exactly as for ``writer="thread"``; a
:class:`ProcessSink` queues them and a sender thread pipes them, in bursts
(one ``marshal`` write per ``_SEND_LINGER`` at most), to one child process
per client process (``python -m recorder.capture.worker``), where a
:class:`~recorder.writer.Writer` per session hashes and stores them. The
client pays for building events and for the pipe; the hashing and the
database work run on another core when one is free.

Guarantees:

* **A dead child loses nothing that reached it.** The client keeps every
  burst until the child reports it resolved (:class:`~.messages.Progress`).
  A child that dies is replaced at once, for sessions already open too; the
  new child is sent what the old one had not resolved and skips what the log
  already holds. If no child can be started (three in a row die before answering),
  the loss is logged and counted and calls go on unrecorded.
* **A dead client loses at most its last burst.** What reached the pipe is
  stored by the child, which then exits (``repair`` closes the session).
* **The loss window and the memory bound of the thread writer**, enforced
  here: producers are asked to wait once the oldest event not yet written to
  the pipe is ``max_lag`` old (the child fell behind and the pipe is full),
  once ``max_pending_bytes`` are unresolved, or once ``_MAX_QUEUED`` events
  wait for the pipe. What reached the pipe needs no limit: a client killed
  loses only what had not, and the child stores the rest, however old.
* **Fork-safe.** In a forked child the parent's pipe is pointed at
  ``/dev/null`` and never written; the fork starts a recorder child of its
  own on its first event, and its sessions re-attach to it.
* **A recorder bug stays small.** An event that ``marshal`` cannot write
  costs its exchange (logged as a bug, counted, written as a capture gap);
  the sender and every other session go on.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import marshal
import os
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from recorder.capture.messages import (
    Abandon,
    Attach,
    Detach,
    EventRow,
    Events,
    Flush,
    Message,
    Progress,
    Reply,
    decode,
    encode,
    event_row,
)
from recorder.errors import CodetapeError
from recorder.events import Event, EventKind
from recorder.process_exit import at_exit
from recorder.store.store import EventStore
from recorder.waiting import Waiters
from recorder.writer import DEFAULT_MAX_LAG, DEFAULT_MAX_PENDING_BYTES, WriterStats

__all__ = ["PIPE_SIZE", "ProcessSink", "RecorderChannel", "shared_channel"]

log = logging.getLogger("codetape.capture")

# The sender gathers a burst for this long: one pipe write per few hundred
# events, not one per event (each write and thread switch costs the client
# more than the event; each wake of the sender about 0.2 ms of CPU, in the
# process whose event loop may be relaying streams). A client killed loses at
# most this burst.
_SEND_LINGER = 0.05
# Events waiting for the pipe before producers are asked to wait: far more
# than a burst; the queue only grows like this while the pipe is full.
_MAX_QUEUED = 4096
# The pipe to the child holds this much (Linux's default is 64 KiB, a few
# hundred events): a child that falls behind for a while (it runs at a lower
# priority, see recorder.capture.worker) then holds nobody back, since only
# events not yet in the pipe count towards the loss window.
PIPE_SIZE = 1024 * 1024
_START_TIMEOUT = 120.0
_STOP_TIMEOUT = 60.0
# Children in a row that die before they answer anything: then no child can run here.
_MAX_FAILED_STARTS = 3


@dataclass(slots=True)
class _Sent:
    """A burst of one session's events the child has not yet resolved."""

    ticket: int
    rows: list[EventRow]
    size: int


@dataclass(slots=True)
class _Request:
    message: Message
    done: threading.Event = field(default_factory=threading.Event)
    reply: Reply | None = None
    then: Callable[[Reply], None] | None = None
    sent: bool = False
    """Written to the pipe: a replacement child must be asked again (after the resent events)."""


def _row_size(row: EventRow) -> int:
    return len(row[6]) + 256


class _Child:
    """One recorder child process, as the client sees it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recorder.capture.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if sys.platform == "linux":  # elsewhere pipes keep their size
            import fcntl

            with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size
                fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.answered = False  # it has said something: it could start
        self.dead = False


class RecorderChannel:
    """This process's recorder child: the pipe to it, the acknowledgements, its replacement."""

    def __init__(self) -> None:
        self.queue: deque[tuple[ProcessSink | None, Any, float]] = deque()
        self.idle = False
        self.unsent_since = 0.0
        """When the oldest event of the burst being written to the pipe was submitted."""
        self.failed: str | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._sinks: dict[str, ProcessSink] = {}
        self._requests: dict[int, _Request] = {}
        self._tokens = itertools.count(1)
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._stopping = False
        self._failed_starts = 0
        self._child = self._start_child()
        self._sender = threading.Thread(target=self._send_loop, name="codetape-tap", daemon=True)
        self._sender.start()

    @property
    def pid(self) -> int:
        return self._child.proc.pid

    def _start_child(self) -> _Child:
        child = _Child()
        reader = threading.Thread(
            target=self._read_loop, args=(child,), name="codetape-acks", daemon=True
        )
        reader.start()
        return child

    # -- used by the sinks -------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def attach(self, sink: ProcessSink, *, wait: bool) -> Reply | None:
        """Open ``sink``'s session in the child; with ``wait``, its reply (errors raise)."""
        with self._lock:
            self._sinks[sink.session_id] = sink
        message = Attach(
            next(self._tokens), sink.session_id, sink.url, sink.repair_dead, sink.options, False
        )
        if not wait:
            self._ask(message, then=sink._attach_failed_if_refused)
            return None
        reply = self.request(message, timeout=_START_TIMEOUT)
        if reply is None or not reply.ok:
            with self._lock:
                self._sinks.pop(sink.session_id, None)
            raise CodetapeError(
                reply.error if reply and reply.error else "the recorder process did not answer"
            )
        return reply

    def forget(self, sink: ProcessSink) -> None:
        with self._lock:
            if self._sinks.get(sink.session_id) is sink:
                del self._sinks[sink.session_id]

    def token(self) -> int:
        return next(self._tokens)

    def request(self, message: Message, *, timeout: float) -> Reply | None:
        """Send ``message`` after everything queued; its :class:`Reply`, None if none in time."""
        pending = self._ask(message)
        if not pending.done.wait(timeout):
            with self._lock:
                self._requests.pop(message.token, None)  # type: ignore[union-attr]
            return None
        return pending.reply

    def _ask(self, message: Message, then: Callable[[Reply], None] | None = None) -> _Request:
        pending = _Request(message, then=then)
        with self._lock:
            if self.failed is not None:
                pending.reply = Reply(0, False, self.failed, (), None)
                pending.done.set()
                return pending
            self._requests[message.token] = pending  # type: ignore[union-attr]
        self.send(message)
        self._urgent.set()
        return pending

    def send(self, message: Message) -> None:
        """Queue a control message, in order with the events queued before it."""
        self.queue.append((None, message, 0.0))
        self._wake.set()

    # -- the sender thread ---------------------------------------------------------

    def _send_loop(self) -> None:
        queue = self.queue
        while True:
            if not queue and not self._stopping and not self._child.dead:
                self.idle = True
                # Checked again once idleness is published: an append that saw
                # the sender busy is not left waiting.
                if not queue:
                    self._wake.wait()
                self._wake.clear()
                self.idle = False
            # Gather a burst, unless someone waits for an answer (a request, the stop).
            self._urgent.wait(_SEND_LINGER)
            self._urgent.clear()
            if self._child.dead and not self._replace():
                return
            items = []
            while queue:
                items.append(queue.popleft())
            try:
                if items:
                    # Until the write returns, the burst is the client's alone.
                    self.unsent_since = next((at for _, _, at in items if at), 0.0)
                    data = self._encode(items)
                    self._child.stdin.write(data)
                    self._child.stdin.flush()
                    self.unsent_since = 0.0
                if self._stopping and not queue:
                    self._child.stdin.close()  # end of input: the child stores what it has, exits
                    return
            except (OSError, ValueError):
                # The child is gone: what it had not resolved goes to the next one.
                self._child.dead = True

    def _encode(self, items: list[tuple[ProcessSink | None, Any, float]]) -> bytes:
        """One marshal record for ``items``, in order; each run of a session's events is one
        :class:`Events`."""
        encoded: list[tuple[Any, ...]] = []
        run: ProcessSink | None = None
        rows: list[EventRow] = []
        for sink, payload, _ in items:
            if sink is not run:
                if run is not None:
                    encoded.append(encode(run._sending(rows)))
                run = sink
                rows = []
            if sink is None:
                encoded.append(encode(payload))
                pending = self._requests.get(getattr(payload, "token", 0))
                if pending is not None:
                    pending.sent = True
            else:
                rows.append(event_row(payload))
        if run is not None:
            encoded.append(encode(run._sending(rows)))
        try:
            return marshal.dumps(encoded)
        except ValueError:
            return marshal.dumps(self._without_bad_rows(encoded))

    @staticmethod
    def _without_bad_rows(encoded: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Some value cannot be marshalled (a recorder bug): its event is abandoned, alone.

        The bad rows leave the kept burst too, so a resend cannot meet them again;
        the events around each go in parts whose tickets count every row.
        """
        kept: list[tuple[Any, ...]] = []
        for item in encoded:
            try:
                marshal.dumps(item)
            except ValueError:
                pass
            else:
                kept.append(item)
                continue
            if item[0] != "Events":
                log.error("codetape bug: could not send %s to the recorder process", item[0])
                continue
            message = Events(*item[1:])
            ticket = message.ticket - len(message.rows)
            good: list[EventRow] = []
            part: list[EventRow] = []
            for row in message.rows:
                ticket += 1
                try:
                    marshal.dumps(row)
                except ValueError as exc:
                    log.error("codetape bug: an event could not be sent to the recorder process")
                    kept.append(encode(Events(message.session_id, ticket - 1, part)))
                    bare: EventRow = (*row[:6], b"", None, None, None, None, None)
                    why = f"codetape bug: the event could not be encoded ({exc})"
                    kept.append(encode(Abandon(message.session_id, bare, why)))
                    part = []
                else:
                    part.append(row)
                    good.append(row)
            kept.append(encode(Events(message.session_id, message.ticket, part)))
            message.rows[:] = good  # the burst kept for a resend holds only what can go
        return kept

    def _replace(self) -> bool:
        """The child died: start another, re-attach every session, resend what was unresolved."""
        old = self._child
        try:
            code = old.proc.wait(5)
        except subprocess.TimeoutExpired:
            old.proc.kill()
            code = old.proc.wait()
        for stream in (old.stdin, old.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        self._failed_starts = 0 if old.answered else self._failed_starts + 1
        if self._stopping:
            self._give_up(f"the recorder process exited early (code {code})")
            return False
        if self._failed_starts >= _MAX_FAILED_STARTS:
            self._give_up(f"the recorder process keeps exiting (code {code})")
            return False
        try:
            self._child = self._start_child()
        except OSError as exc:
            self._give_up(f"no recorder process could be started ({exc})")
            return False
        with self._lock:
            sinks = list(self._sinks.values())
            # Requests still queued go in their turn; those the dead child had
            # go again once it has been sent what preceded them.
            requests = [r for r in self._requests.values() if r.sent]
        messages: list[Any] = []
        resent = 0
        for sink in sinks:
            attach = Attach(
                next(self._tokens), sink.session_id, sink.url, False, sink.options, True
            )
            with self._lock:
                self._requests[attach.token] = _Request(attach, then=sink._attach_failed_if_refused)
            messages.append(encode(attach))
            for sent in sink._unresolved():
                messages.append(encode(Events(sink.session_id, sent.ticket, sent.rows)))
                resent += len(sent.rows)
            sink.restarts += 1
        messages.extend(encode(r.message) for r in requests)
        log.warning(
            "codetape: the recorder process exited (code %s); a new one (pid %d) takes over "
            "and is sent the %d event(s) it may not have stored",
            code,
            self._child.proc.pid,
            resent,
        )
        try:
            self._child.stdin.write(marshal.dumps(messages))
            self._child.stdin.flush()
        except (OSError, ValueError):
            self._child.dead = True
        return True

    def _give_up(self, why: str) -> None:
        # ``failed`` is set last: whoever sees it also sees the losses counted and written.
        with self._lock:
            sinks = list(self._sinks.values())
            requests = list(self._requests.values())
            self._requests.clear()
        queued: dict[int, int] = {}
        while self.queue:
            sink, _, _ = self.queue.popleft()
            if sink is not None:
                queued[id(sink)] = queued.get(id(sink), 0) + 1
        losses = [(sink, sink._lost_with_child(why, queued.get(id(sink), 0))) for sink in sinks]
        if not self._stopping:
            log.error("codetape: %s; calls continue unrecorded, losses are counted", why)
            for sink, lost in losses:
                if lost:
                    _write_gap(sink, lost, why)
        with self._lock:
            self.failed = why
        for pending in requests:
            pending.reply = Reply(0, False, why, (), None)
            pending.done.set()

    # -- the acknowledgement reader --------------------------------------------------

    def _read_loop(self, child: _Child) -> None:
        while True:
            try:
                batch = marshal.load(child.stdout)
            except (EOFError, OSError, ValueError, TypeError):
                break
            child.answered = True
            for item in batch:
                message = decode(item)
                if type(message) is Progress:
                    with self._lock:
                        sink = self._sinks.get(message.session_id)
                    if sink is not None:
                        sink._progress(message)
                elif type(message) is Reply:
                    with self._lock:
                        pending = self._requests.pop(message.token, None)
                    if pending is not None:
                        pending.reply = message
                        pending.done.set()
                        if pending.then is not None:
                            pending.then(message)
        child.dead = True
        self._urgent.set()
        self._wake.set()

    # -- stopping ----------------------------------------------------------------

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Hand over everything queued, end the child's input, wait until it has stored it.

        Sessions still open stay open in the log (``repair`` closes them later).
        """
        if self._pid != os.getpid():
            return
        self._stopping = True
        self._wake.set()
        self._urgent.set()
        self._sender.join(timeout)
        proc = self._child.proc
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("codetape: the recorder process did not finish in %.0f s", timeout)
            proc.kill()
            proc.wait()

    def forked(self) -> None:
        """In a forked child: this pipe belongs to the parent. Drop it without a byte written."""
        self.failed = "the client process forked"
        self.queue.clear()
        # Pointing the descriptors at /dev/null (not closing them) keeps the
        # file objects valid and lets the parent's child see end-of-file once
        # the parent alone is gone; a buffered flush at exit goes nowhere.
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for stream in (self._child.stdin, self._child.stdout):
                with contextlib.suppress(OSError, ValueError):  # closed already
                    os.dup2(null, stream.fileno())
        finally:
            os.close(null)


def _write_gap(sink: ProcessSink, lost: int, why: str) -> None:
    """Say in the log itself what a session lost with its child, if the store takes it."""
    gap = Event(
        sink.session_id,
        EventKind.CAPTURE_GAP,
        None,
        meta={"reason": f"the recorder process was lost: {why}", "lost_events": lost},
    )
    try:
        with EventStore.open(sink.url) as store:
            store.append([gap])
    except Exception as exc:
        log.error("codetape: could not record the capture gap of %s: %s", sink.session_id, exc)


_shared: RecorderChannel | None = None
_shared_lock = threading.Lock()


def shared_channel() -> RecorderChannel:
    """This process's recorder child, started now if there is none (or it could not go on)."""
    global _shared
    with _shared_lock:
        if _shared is not None and _shared._pid != os.getpid():
            # Forked, and no fork hook ran (os.register_at_fork is missing here).
            _shared.forked()
            _shared = None
        if _shared is None or _shared.failed is not None:
            _shared = RecorderChannel()
        return _shared


def _stop_shared() -> None:
    global _shared
    with _shared_lock:
        channel, _shared = _shared, None
    if channel is not None:
        channel.stop()


at_exit(_stop_shared)


class ProcessSink:
    """One session's events, sent to the recorder child (see the module docstring)."""

    def __init__(
        self,
        url: str,
        session_id: str,
        *,
        repair_dead: bool = True,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.session_id = session_id
        self.repair_dead = repair_dead
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        self.max_lag: float = self.options.get("max_lag", DEFAULT_MAX_LAG)
        self.max_pending_bytes: int = self.options.get(
            "max_pending_bytes", DEFAULT_MAX_PENDING_BYTES
        )
        self.restarts = 0
        """How many times a dead recorder child was replaced under this session."""
        self._init_state()
        channel = shared_channel()
        reply = channel.attach(self, wait=True)
        assert reply is not None
        self.writer_identity: dict[str, Any] = dict(reply.writer or {})
        """The recorder child that writes this session (pid and start time)."""
        self._channel: RecorderChannel | None = channel
        _live_sinks[id(self)] = self

    def _init_state(self) -> None:
        self.congested = False
        self._lock = threading.Lock()
        self._room = Waiters(self._lock)
        self._pid = os.getpid()
        self._channel = None
        self._unacked: deque[_Sent] = deque()
        self._unacked_bytes = 0
        self._queued_bytes = 0  # submitted, not yet taken by the sender
        self._ticket = 0
        self._failing = False
        self._failed: str | None = None
        self._closed = False
        self._submitted = 0
        self._lost_here = 0
        self._child_stats = WriterStats()
        self._base_stats = WriterStats()

    # -- the producer's side --------------------------------------------------------

    def submit(self, event: Event) -> bool:
        """Queue ``event`` for the child; False when it is lost (no child could be started)."""
        channel = self._channel
        if channel is None:
            channel = self._reattach()
        if self._failed is not None or channel.failed is not None:
            with self._lock:
                self._lost_here += 1
                self._submitted += 1
            return False
        size = len(event.payload) + 256
        with self._lock:
            self._queued_bytes += size
        now = time.monotonic()
        queue = channel.queue
        queue.append((self, event, now))
        if channel.idle:
            channel.wake()
        self._evaluate(now, channel)
        return True

    def _evaluate(self, now: float, channel: RecorderChannel) -> None:
        """Set :attr:`congested` from what the child has not taken or resolved (lock-free).

        The loss window only counts what has not reached the pipe: a client
        killed loses that, and the child stores the rest, however old.
        """
        if self._failed is not None or self._failing or self._closed:
            self.congested = False
            return
        queue = channel.queue
        if len(queue) > _MAX_QUEUED or (
            self._queued_bytes + self._unacked_bytes > self.max_pending_bytes
        ):
            self.congested = True
            return
        oldest = channel.unsent_since
        if not oldest and queue:
            try:
                oldest = queue[0][2] or now
            except IndexError:
                oldest = now  # the sender took it meanwhile
        self.congested = bool(oldest) and now - oldest > self.max_lag

    def _blocked(self) -> bool:
        channel = self._channel
        if channel is None:
            self.congested = False
            return False
        self._evaluate(time.monotonic(), channel)
        if self.congested:
            channel._urgent.set()  # the sender should not linger while someone waits
        return self.congested

    def wait_for_room(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._room.wait(self._blocked, timeout)

    async def wait_for_room_async(self) -> None:
        await self._room.wait_async(self._blocked)

    def abandon(self, event: Event, reason: str) -> None:
        channel = self._channel or self._reattach()
        channel.send(Abandon(self.session_id, event_row(event), reason))

    # -- the sender's and the reader's side --------------------------------------------

    def _sending(self, rows: list[EventRow]) -> Events:
        """Number the burst ``rows`` and keep it until the child resolves it (sender thread)."""
        size = sum(len(row[6]) for row in rows) + 256 * len(rows)
        with self._lock:
            self._queued_bytes -= size
            self._ticket += len(rows)
            self._submitted += len(rows)
            self._unacked.append(_Sent(self._ticket, rows, size))
            self._unacked_bytes += size
            return Events(self.session_id, self._ticket, rows)

    def _unresolved(self) -> list[_Sent]:
        with self._lock:
            # A new child starts counting from zero: what it reports adds to this.
            self._base_stats = self._merged(self._base_stats, self._child_stats)
            self._child_stats = WriterStats()
            return list(self._unacked)

    def _progress(self, message: Progress) -> None:
        with self._lock:
            unacked = self._unacked
            while unacked and unacked[0].ticket <= message.ticket:
                self._unacked_bytes -= unacked.popleft().size
            self._failing = message.failing
            if message.stats:
                self._child_stats = WriterStats(*message.stats)
            self._blocked()
            self._room.wake()

    def _attach_failed_if_refused(self, reply: Reply) -> None:
        if not reply.ok:
            self._lost_with_child(reply.error or "the recorder process refused the session", 0)
            log.error("codetape: session %s cannot be recorded: %s", self.session_id, reply.error)

    def _lost_with_child(self, why: str, queued: int) -> int:
        """No child will store this session's events: count what it had not resolved."""
        with self._lock:
            self._failed = why
            lost = sum(len(sent.rows) for sent in self._unacked) + queued
            self._lost_here += lost
            self._unacked.clear()
            self._unacked_bytes = 0
            self._queued_bytes = 0
            self.congested = False
            self._room.wake()
        return lost

    # -- the rest of the sink -----------------------------------------------------

    def flush(self, timeout: float | None = None, *, fail_fast: bool = False) -> bool:
        channel = self._channel or self._reattach()
        wait = 3600.0 if timeout is None else timeout
        reply = channel.request(
            Flush(channel.token(), self.session_id, timeout, fail_fast), timeout=wait + 5
        )
        self._take_stats(reply)
        return reply is not None and reply.ok

    def _take_stats(self, reply: Reply | None) -> None:
        if reply is not None and reply.stats:
            with self._lock:
                self._child_stats = WriterStats(*reply.stats)

    @property
    def failing(self) -> bool:
        return self._failing or self._failed is not None

    @staticmethod
    def _merged(a: WriterStats, b: WriterStats) -> WriterStats:
        """The counters of ``a`` and then ``b`` (two children, one after the other)."""
        return WriterStats(
            submitted=a.submitted + b.submitted,
            stored=a.stored + b.stored,
            lost=a.lost + b.lost,
            commits=a.commits + b.commits,
            store_errors=a.store_errors + b.store_errors,
            busy_retries=a.busy_retries + b.busy_retries,
            recorder_errors=a.recorder_errors + b.recorder_errors,
            last_error=b.last_error or a.last_error,
        )

    def current_stats(self) -> WriterStats:
        """The child's last report, plus what was lost on this side of the pipe."""
        with self._lock:
            stats = self._merged(self._base_stats, self._child_stats)
            stats.submitted = self._submitted
            stats.lost += self._lost_here
            if self._failed is not None and stats.last_error is None:
                stats.last_error = self._failed
            return stats

    def forked(self) -> None:
        """In a forked child: start afresh; the next event re-attaches to this process's child."""
        if self._pid == os.getpid():
            return
        restarts = self.restarts
        self._init_state()
        self.restarts = restarts

    def _reattach(self) -> RecorderChannel:
        channel = shared_channel()
        self._channel = channel
        channel.attach(self, wait=False)
        return channel

    def close(self, timeout: float = 10.0, *, session_closed: bool = False) -> None:
        if self._closed:
            return
        channel = self._channel
        if channel is None:
            self._closed = True
            return
        reply = channel.request(
            Detach(channel.token(), self.session_id, timeout, session_closed),
            timeout=timeout + 60.0,
        )
        if reply is None:
            log.error(
                "codetape: the recorder process did not close session %s in time", self.session_id
            )
        self._take_stats(reply)
        with self._lock:
            self._closed = True
            self.congested = False
            self._room.wake()
        channel.forget(self)
        _live_sinks.pop(id(self), None)


_live_sinks: weakref.WeakValueDictionary[int, ProcessSink] = weakref.WeakValueDictionary()


def _after_fork_in_child() -> None:
    global _shared
    channel, _shared = _shared, None
    if channel is not None:
        channel.forked()
    for sink in list(_live_sinks.values()):
        sink.forked()


if hasattr(os, "register_at_fork"):  # not on every platform: sessions also check the pid
    os.register_at_fork(after_in_child=_after_fork_in_child)

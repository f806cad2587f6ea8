"""The recorder child (``python -m recorder.capture.worker``): stores what its client sends.

It reads :mod:`~recorder.capture.messages` from stdin and stores each
session's events with a :class:`~recorder.writer.Writer` made by
:func:`~recorder.capture.sink.open_writer` (one per session, one store per
database URL), reporting on stdout what is resolved (:class:`Progress`, after
each commit, and whenever a store stalls or recovers) and answering requests
(:class:`Reply`).

Guarantees: one bad message costs only itself (it is logged); at end of
input (the client is done, or dead) everything received is stored before the
child exits, and nothing is closed: the child gives up its sessions' leases
(it holds them: it writes the events), so ``repair`` then closes what a dead
client left open. A session attached with ``adopt`` (this child replaces one that died)
skips the events the log already holds, so a resend stores nothing twice.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import signal
import sys
import threading
from dataclasses import astuple, dataclass, field
from typing import IO, Any

import sqlalchemy as sa

from recorder.capture.messages import (
    Abandon,
    Attach,
    Detach,
    Events,
    Flush,
    Message,
    Progress,
    Query,
    Reply,
    decode,
    encode,
    event_from_row,
)
from recorder.capture.sink import SessionWriter, close_writer, open_writer, writer_options
from recorder.errors import CodetapeError
from recorder.events import Event, EventKind
from recorder.lease import abandon_leases
from recorder.repair import writer_identity
from recorder.store.engine import translate_errors
from recorder.store.store import EventStore
from recorder.writer import DEFAULT_MAX_LAG

__all__ = ["CHILD_FLUSH_INTERVAL", "NICENESS", "main"]

log = logging.getLogger("codetape.capture")

_REPORT_EVERY = 0.05
# How much lower than its client the child runs. Its work can wait (the pipe
# and the client's queue hold what it has not stored) while the client's cannot:
# with no core free, a proxy's relay and an SDK's parsing go first. It is still
# a share of the CPU (a quarter of a hog's at nice 0), not only idle time, so a
# recorder on a machine busy for good still keeps up with ordinary streams.
NICENESS = 5
# The group commit's linger here. Whatever reached this process is stored even
# if the client dies, so the client's loss window does not depend on it; fewer,
# larger commits do cost less (a commit costs about a millisecond of CPU
# whatever its size: with 50 ms, a paced stream paid ~150 us an event for it).
CHILD_FLUSH_INTERVAL = 0.25
_STORED_SEQ = sa.text("SELECT max(seq) FROM event_rows WHERE exchange_id = :x")
_SESSION_KIND = sa.text(
    "SELECT 1 FROM event_rows WHERE session_id = :s AND exchange_id IS NULL AND kind = :k LIMIT 1"
)


@dataclass(slots=True)
class _Session:
    writer: SessionWriter
    url: str
    adopt: bool
    # (writer ticket, client ticket): once the writer resolves the first, the client's is.
    acks: list[tuple[int, int]] = field(default_factory=list)
    acked: int = 0
    stalled: bool = False
    failing: bool = False
    # Adopted sessions: the highest seq the log held for each exchange when first seen.
    stored_seq: dict[str, int] = field(default_factory=dict)


class _Child:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self._out_lock = threading.Lock()
        self._lock = threading.Lock()
        self.sessions: dict[str, _Session] = {}
        self.stores: dict[str, EventStore] = {}
        self.done = threading.Event()

    def send(self, message: Message) -> None:
        data = marshal.dumps([encode(message)])
        with self._out_lock:
            try:
                self.out.write(data)
                self.out.flush()
            except (OSError, ValueError):
                pass  # the client is gone: storing goes on

    def handle(self, message: Message) -> None:
        kind = type(message)
        if kind is Events:
            self.events(message)  # type: ignore[arg-type]
        elif kind is Attach:
            self.attach(message)  # type: ignore[arg-type]
        elif kind is Abandon:
            self.abandon(message)  # type: ignore[arg-type]
        elif kind is Flush:
            self._in_thread(self.flush, message)
        elif kind is Query:
            self.query(message)  # type: ignore[arg-type]
        elif kind is Detach:
            self._in_thread(self.detach, message)
        else:
            log.error("codetape: the recorder process got an unexpected %s", kind.__name__)

    @staticmethod
    def _in_thread(target: Any, message: Message) -> None:
        # Waiting on a store must not keep the other sessions' events unread.
        threading.Thread(target=target, args=(message,), daemon=True).start()

    # -- sessions ----------------------------------------------------------------

    def attach(self, message: Attach) -> None:
        try:
            with self._lock:
                store = self.stores.get(message.url)
                if store is None:
                    store = self.stores[message.url] = EventStore.open(message.url)
            sid = message.session_id
            # A session its dead writer had stored the opening of is taken over
            # (its lease moved here); one it had not opens with the resent events.
            take_over = message.adopt and store.has_session(sid)
            writer = open_writer(
                store,
                sid,
                repair_dead=message.repair_dead,
                take_over=take_over,
                identity=writer_identity(),
                on_progress=lambda done: self._progress(sid, done),
                **_child_writer_options(message.options),
            )
        except CodetapeError as exc:
            self._release(message.url)
            self.send(Reply(message.token, False, str(exc), (), None))
            return
        with self._lock:
            self.sessions[sid] = _Session(writer, message.url, message.adopt)
        identity = {k: v for k, v in writer_identity().items() if k in ("pid", "start_ticks")}
        self.send(Reply(message.token, True, None, astuple(writer.current_stats()), identity))

    def _release(self, url: str) -> None:
        # A long test run records into many short-lived databases (a temporary
        # one per tape): a store no session uses is closed, not kept open.
        with self._lock:
            store = self.stores.get(url)
            if store is None or any(s.url == url for s in self.sessions.values()):
                return
            del self.stores[url]
        store.close()

    def events(self, message: Events) -> None:
        session = self.sessions.get(message.session_id)
        if session is None:
            log.error("codetape: events for unknown session %s dropped", message.session_id)
            return
        writer = session.writer
        for row in message.rows:
            event = event_from_row(row)
            if session.adopt and not self._unstored(session, event):
                continue
            writer.submit(event)
        with self._lock:
            session.acks.append((writer.ticket, message.ticket))
        if writer.done_ticket >= writer.ticket:
            self._progress(message.session_id, writer.done_ticket)

    def _unstored(self, session: _Session, event: Event) -> bool:
        """Adopted sessions: whether ``event`` still has to be stored (False: the log has it)."""
        store = session.writer.store
        xid = event.exchange_id
        try:
            if xid is None:
                if event.kind not in (EventKind.SESSION_OPEN, EventKind.SESSION_CLOSE):
                    return True
                with translate_errors(store.url), store.engine.connect() as conn:
                    found = conn.execute(
                        _SESSION_KIND, {"s": event.session_id, "k": event.kind.value}
                    ).first()
                return found is None
            stored = session.stored_seq.get(xid)
            if stored is None:
                with translate_errors(store.url), store.engine.connect() as conn:
                    value = conn.execute(_STORED_SEQ, {"x": xid}).scalar()
                stored = session.stored_seq[xid] = -1 if value is None else int(value)
                seq = event.seq if event.seq is not None else 0
                if seq > stored + 1:
                    session.writer.damage(
                        xid,
                        event.session_id,
                        stored + 1,
                        seq - stored - 1,
                        "the recorder process died before storing these events",
                    )
        except CodetapeError as exc:
            log.warning("codetape: could not check what the log holds (%s); storing anyway", exc)
            return True
        return event.seq is None or event.seq > stored

    def abandon(self, message: Abandon) -> None:
        session = self.sessions.get(message.session_id)
        if session is not None:
            session.writer.abandon(event_from_row(message.row), message.reason)

    def _progress(self, sid: str, done: int) -> None:
        """The writer of ``sid`` resolved every event up to ``done``: tell the client."""
        with self._lock:
            session = self.sessions.get(sid)
            if session is None:
                return
            acked = session.acked
            acks = session.acks
            while acks and acks[0][0] <= done:
                acked = acks.pop(0)[1]
            if acked == session.acked:
                return
            session.acked = acked
            stats = astuple(session.writer.current_stats())
            stalled, failing = session.writer.stalled, session.writer.failing
            session.stalled, session.failing = stalled, failing
        self.send(Progress(sid, acked, stalled, failing, stats))

    def report(self) -> None:
        """Tell the client when a session's store stalls or recovers, even without commits."""
        while not self.done.wait(_REPORT_EVERY):
            with self._lock:
                changed = []
                for sid, session in self.sessions.items():
                    writer = session.writer
                    stalled, failing = writer.stalled, writer.failing
                    if (stalled, failing) != (session.stalled, session.failing):
                        session.stalled, session.failing = stalled, failing
                        changed.append(
                            Progress(
                                sid,
                                session.acked,
                                stalled,
                                failing,
                                astuple(writer.current_stats()),
                            )
                        )
            for message in changed:
                self.send(message)

    def flush(self, message: Flush) -> None:
        session = self.sessions.get(message.session_id)
        if session is None:
            self.send(Reply(message.token, False, "unknown session", (), None))
            return
        ok = session.writer.flush(message.timeout, fail_fast=message.fail_fast)
        self.send(Reply(message.token, ok, None, astuple(session.writer.current_stats()), None))

    def query(self, message: Query) -> None:
        session = self.sessions.get(message.session_id)
        stats = astuple(session.writer.current_stats()) if session is not None else ()
        self.send(Reply(message.token, session is not None, None, stats, None))

    def detach(self, message: Detach) -> None:
        with self._lock:
            session = self.sessions.get(message.session_id)
        if session is None:
            self.send(Reply(message.token, False, "unknown session", (), None))
            return
        stats = close_writer(session.writer, message.timeout, session_closed=message.session_closed)
        with self._lock:
            self.sessions.pop(message.session_id, None)
        self._release(session.url)
        self.send(Reply(message.token, True, None, astuple(stats), None))

    def finish(self) -> None:
        """End of input: store what arrived for every session, close nothing."""
        self.done.set()
        for session in list(self.sessions.values()):
            close_writer(session.writer)
        for store in list(self.stores.values()):
            # Nothing more will be written to the sessions left open: their
            # leases may expire now, so a repair need not wait for them.
            abandon_leases(store)
            store.close()


def _child_writer_options(options: dict[str, Any]) -> dict[str, Any]:
    """The session's writer options as this child applies them (see CHILD_FLUSH_INTERVAL)."""
    chosen = writer_options(options)
    chosen.setdefault("flush_interval", CHILD_FLUSH_INTERVAL)
    # Nobody waits on this writer's lag (the client bounds its own, before the
    # pipe): a lag past max_lag here would only make every submit re-check it.
    chosen["max_lag"] = max(chosen.get("max_lag", DEFAULT_MAX_LAG), chosen["flush_interval"])
    return chosen


def main() -> None:
    # Ctrl-C reaches the whole process group; the child must outlive it to drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # not permitted here: the same priority, then
        os.nice(NICENESS)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by accident goes to stderr, not the reply pipe
    child = _Child(out)
    threading.Thread(target=child.report, name="codetape-report", daemon=True).start()
    stdin = sys.stdin.buffer
    while True:
        try:
            batch = marshal.load(stdin)
        except (EOFError, ValueError, TypeError):
            break  # the client process is done or gone
        for item in batch:
            try:
                child.handle(decode(item))
            except Exception:
                # One bad message must not cost the other sessions their records.
                log.exception("codetape: the recorder process could not apply %r", item[:2])
    child.finish()
    out.close()


if __name__ == "__main__":
    main()

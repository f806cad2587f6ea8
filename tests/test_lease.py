"""Session leases: taken with the session, renewed, released, fenced, and checked by repair.

The real recorders (paused with SIGSTOP, in other pid namespaces, on another
host name) are in tests/test_repair_namespaces.py; here the keeper, the fence
and the continuation are driven in process, on both backends.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from recorder.capture import CaptureSession
from recorder.cli import main
from recorder.errors import CodetapeError
from recorder.events import Event, EventKind, StoredEvent
from recorder.lease import (
    LEASE_SECONDS_ENV,
    RENEW_SECONDS_ENV,
    _keepers,
    lease_keeper,
    lease_timing,
    read_leases,
)
from recorder.repair import Liveness, _close, liveness, repair
from recorder.store import EventStore

FRAME = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta"}\n\n'
CREATED = b'event: response.created\ndata: {"type":"response.created","response":{"id":"r1"}}\n\n'
COMPLETED = (
    b'event: response.completed\ndata: {"type":"response.completed",'
    b'"response":{"id":"r1","status":"completed"}}\n\n'
)
SSE = [("content-type", "text/event-stream")]


@pytest.fixture(autouse=True)
def _no_renewer_left() -> Iterator[None]:
    """A test that fails with a session open must not leave its renewer running."""
    yield
    # Locally only: the test's database may already be gone.
    for keeper in list(_keepers):
        keeper._forked()


@pytest.fixture
def other(store: EventStore) -> Iterator[EventStore]:
    """A second store on the same database: another process's view of it."""
    with EventStore.open(store.url) as opened:
        yield opened


def _lease_rows(store: EventStore) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [
            (r[0], r[1]) for r in conn.execute(sa.text("SELECT session_id, holder FROM leases"))
        ]


def _events(store: EventStore, session_id: str) -> list[StoredEvent]:
    return list(store.session_events(session_id))


def _named(store: EventStore, name: str) -> list[str]:
    return [s.id for s in store.sessions() if s.name == name]


def test_a_session_holds_its_lease_from_its_open_to_its_close(store: EventStore) -> None:
    session = CaptureSession(store, "leased", writer="thread")
    assert session.flush(10)
    [opening] = [e for e in _events(store, session.id) if e.kind is EventKind.SESSION_OPEN]
    keeper = lease_keeper(store)
    # The open carries the lease's mark, and the row landed with it.
    assert opening.meta["lease"] == {
        "holder": keeper.holder,
        "seconds": keeper.duration,
        "renew_seconds": keeper.renew_every,
    }
    assert _lease_rows(store) == [(session.id, keeper.holder)]
    [state] = liveness(store).values()
    assert state.lease == "live" and not state.repairable
    assert 0 < state.expires_in_s <= keeper.duration  # type: ignore[operator]
    session.close()
    assert _lease_rows(store) == []
    assert store.find_session(session.id).closed and liveness(store) == {}


def test_the_renewer_pushes_the_expiry_forward(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LEASE_SECONDS_ENV, "1.5")
    monkeypatch.setenv(RENEW_SECONDS_ENV, "0.1")
    session = CaptureSession(store, "renewed", writer="thread")
    assert session.flush(10)
    first = read_leases(store, [session.id])[session.id]
    deadline = time.monotonic() + 20
    while read_leases(store, [session.id])[session.id].renewed_at_ns == first.renewed_at_ns:
        assert time.monotonic() < deadline, "the lease was never renewed"
        time.sleep(0.05)
    later = read_leases(store, [session.id])[session.id]
    assert later.expires_at_ns > first.expires_at_ns
    assert later.expires_at_ns - later.renewed_at_ns == 1_500_000_000
    session.close()


def test_lease_timing_comes_from_arguments_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LEASE_SECONDS_ENV, raising=False)
    monkeypatch.delenv(RENEW_SECONDS_ENV, raising=False)
    assert lease_timing() == (30.0, 5.0)
    assert lease_timing(3.0) == (3.0, 1.0)  # a third of a short lease
    monkeypatch.setenv(LEASE_SECONDS_ENV, "60")
    monkeypatch.setenv(RENEW_SECONDS_ENV, "2")
    assert lease_timing() == (60.0, 2.0)
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(LEASE_SECONDS_ENV, bad)
        with pytest.raises(CodetapeError, match=LEASE_SECONDS_ENV):
            lease_timing()
    with pytest.raises(CodetapeError, match="renewed more often"):
        lease_timing(1.0, 2.0)


def test_a_bad_lease_setting_refuses_the_session_before_anything_is_recorded(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LEASE_SECONDS_ENV, "soon")
    with pytest.raises(CodetapeError, match="CODETAPE_LEASE_SECONDS must be a positive number"):
        CaptureSession(store, "refused", writer="thread")
    assert store.sessions() == []


def _exchange_with_frames(session: CaptureSession, frames: int):  # type: ignore[no-untyped-def]
    x = session.exchange()
    x.start("POST", "https://api.openai.com/v1/responses", [], b'{"model":"m"}')
    x.response(200, SSE, "HTTP/1.1")
    x.feed(CREATED)
    for _ in range(frames):
        x.feed(FRAME)
    return x


def test_a_recorder_whose_session_was_closed_under_it_goes_on_in_a_continuation(
    store: EventStore, other: EventStore
) -> None:
    """`repair --force` next to a live recorder: it must never write into the closed session."""
    session = CaptureSession(store, "live", writer="thread", labels={"team": "a"})
    first = _exchange_with_frames(session, 3)
    assert session.flush(10)

    report = repair(other, force=True)
    assert report.sessions_closed == [session.id]
    assert report.exchanges_interrupted == [first.id]
    # The renewer finds the lease gone.
    assert lease_keeper(store).renew() == {session.id}

    for _ in range(2):  # the rest of the first exchange: it cannot be recorded
        first.feed(FRAME)
    first.finish()
    second = _exchange_with_frames(session, 4)  # a new exchange: recorded whole
    second.feed(COMPLETED)
    second.finish()
    session.close()

    old, new = _named(store, "live")
    assert old == session.id
    # The old session: what was stored before the repair, ended by it, closed once.
    [x1] = store.exchanges(old)
    assert (x1.outcome, x1.sse_events) == ("interrupted", 4)
    old_events = _events(store, old)
    closes = [e for e in old_events if e.kind is EventKind.SESSION_CLOSE]
    assert len(closes) == 1 and closes[0].meta["repaired"] is True
    # The continuation names it, says why, and accounts for every event of the first exchange.
    continuation = store.find_session(new)
    assert continuation.metadata == store.find_session(old).metadata
    assert continuation.labels == {"team": "a"} and continuation.closed
    kinds = [(e.kind, e.exchange_id) for e in _events(store, new) if e.exchange_id is None]
    assert [k for k, _ in kinds] == [
        EventKind.SESSION_OPEN,
        EventKind.CAPTURE_GAP,
        EventKind.CAPTURE_GAP,
        EventKind.SESSION_CLOSE,
    ]
    opening, lost_lease, lost_exchange, _ = (
        e for e in _events(store, new) if e.exchange_id is None
    )
    assert opening.meta["continues"] == old and "lease" in opening.meta
    assert lost_lease.meta["lease_lost"] is True and lost_lease.meta["continues"] == old
    assert lost_exchange.meta["exchange"] == first.id
    assert lost_exchange.meta["session"] == old
    assert lost_exchange.meta["lost_events"] == 3  # two frames and the ending
    # The recorder's next seq: the one the repair's ending took.
    assert lost_exchange.meta["first_lost_seq"] == x1.events - 1
    [x2] = store.exchanges(new)
    assert (x2.id, x2.outcome, x2.sse_events) == (second.id, "completed", 6)
    assert session.stats.events_lost == 3
    report_v = store.verify()
    assert report_v.ok and report_v.open_exchanges == [] and report_v.capture_gaps == 2
    assert _lease_rows(store) == []


def test_a_continuation_that_loses_its_lease_is_continued_again(
    store: EventStore, other: EventStore
) -> None:
    session = CaptureSession(store, "twice", writer="thread")
    assert session.flush(10)
    repair(other, force=True)
    first = _exchange_with_frames(session, 1)  # starts in the first continuation
    assert session.flush(10)
    [_, middle] = _named(store, "twice")
    assert repair(other, force=True).sessions_closed == [middle]
    first.feed(FRAME)
    first.finish()
    session.close()
    old, middle_again, last = _named(store, "twice")
    assert middle_again == middle
    assert store.find_session(middle).metadata == store.find_session(old).metadata
    assert next(e.meta.get("continues") for e in _events(store, last)) == middle
    [gap] = [e for e in _events(store, last) if e.meta.get("exchange") == first.id]
    assert gap.meta["session"] == middle and gap.meta["lost_events"] == 2
    assert all(store.find_session(s).closed for s in (old, middle, last))
    assert store.verify().ok and store.verify().open_exchanges == []


def test_repair_rechecks_the_lease_under_the_write_lock(
    store: EventStore, other: EventStore
) -> None:
    """A repair that judged a lease expired does not close the session if it was renewed since."""
    session = CaptureSession(store, "raced", writer="thread")
    assert session.flush(10)
    stale = Liveness(session.id, "expired", None, -1.0, None)
    exchanges, why = _close(other, stale, force=False)
    assert exchanges is None and "renewed just now" in why
    assert not store.find_session(session.id).closed
    session.close()


def test_a_renewal_in_flight_wins_over_a_repair_that_saw_the_lease_expired(
    store: EventStore, other: EventStore
) -> None:
    session = CaptureSession(store, "renewing", writer="thread")
    assert session.flush(10)
    keeper = lease_keeper(store)
    renewal = store.engine.connect()
    with renewal.begin():
        renewal.execute(sa.text("UPDATE leases SET expires_at_ns = 0"))  # expired...
    tx = renewal.begin()
    # ...and being renewed right now, not yet committed.
    renewal.execute(
        sa.text("UPDATE leases SET expires_at_ns = expires_at_ns + :far WHERE holder = :h"),
        {"far": 10**19 // 2, "h": keeper.holder},
    )
    result: list[object] = []
    repairer = threading.Thread(target=lambda: result.append(repair(other)))
    repairer.start()
    repairer.join(0.5)
    assert repairer.is_alive()  # waiting for the renewal's lock, not deciding without it
    tx.commit()
    renewal.close()
    repairer.join(30)
    [report] = result
    assert report.sessions_closed == []  # type: ignore[attr-defined]
    [(sid, why)] = report.skipped  # type: ignore[attr-defined]
    assert sid == session.id and "renewed just now" in why
    assert not store.find_session(session.id).closed
    session.close()
    assert store.verify().ok


def test_abandoned_leases_expire_at_once(store: EventStore, other: EventStore) -> None:
    session = CaptureSession(store, "abandoned", writer="thread")
    _exchange_with_frames(session, 2)
    assert session.flush(10)
    assert repair(other).sessions_closed == []
    lease_keeper(store).abandon()  # what the recorder child does at end of input
    report = repair(other)
    assert report.sessions_closed == [session.id]
    [x] = store.exchanges(session.id)
    assert x.outcome == "interrupted" and "lease" in (x.reason or "")
    ending = store.exchange_events(x.id)[-1]
    assert ending.meta["lease"]["holder"] == lease_keeper(store).holder
    assert _lease_rows(store) == []


def test_verify_says_whether_each_open_exchange_has_a_live_lease(
    store: EventStore, other: EventStore
) -> None:
    session = CaptureSession(store, "watched", writer="thread")
    x = _exchange_with_frames(session, 1)
    assert session.flush(10)
    # A session recorded before leases, by a recorder on another host.
    legacy = "0" * 32
    store.append(
        [
            Event(
                legacy,
                EventKind.SESSION_OPEN,
                0,
                meta={"name": "old", "metadata": {"recorder": {"host": "elsewhere.example"}}},
            ),
            Event(legacy, EventKind.REQUEST, 0, "1" * 32, meta={"method": "POST", "url": "u"}),
        ]
    )
    result = CliRunner().invoke(main, ["verify", "--db", store.url])
    assert result.exit_code == 0, result.output
    assert f"{x.id} in session {session.id}: lease live (expires in" in result.output
    assert f"{'1' * 32} in session {'0' * 32}: no lease (recorded before leases)" in (result.output)
    lease_keeper(store).abandon()
    as_json = CliRunner().invoke(main, ["verify", "--db", store.url, "--json"])
    entries = {e["exchange"]: e for e in json.loads(as_json.stdout)["open_exchange_sessions"]}
    assert entries[x.id]["lease"] == "expired" and entries[x.id]["repairable"] is True
    assert entries["1" * 32]["lease"] is None
    assert entries["1" * 32]["recorder_process"] == "unknown"
    assert entries["1" * 32]["repairable"] is False
    text = CliRunner().invoke(main, ["verify", "--db", store.url])
    # Seconds since the abandon: 0 unless the machine is slow.
    assert re.search(r"lease expired \d+ s ago: `codetape repair` closes it", text.output)


def test_repair_sweeps_lease_rows_of_sessions_that_are_closed(
    store: EventStore, other: EventStore
) -> None:
    """A recorder that closed its session but could not release its lease leaves no litter."""
    session = CaptureSession(store, "closed", writer="thread")
    assert session.flush(10)
    keeper = lease_keeper(store)
    holder = keeper.holder
    session.sink.submit(Event(session.id, EventKind.SESSION_CLOSE, None))
    assert session.flush(10)
    keeper.abandon()  # the row stays, expired; the release never comes
    assert _lease_rows(store) == [(session.id, holder)]
    repair(other)
    assert _lease_rows(store) == []
    session.close()


def _writer_dies(store: EventStore) -> None:
    """The keeper's process is gone: it renews and releases nothing more (no database write)."""
    lease_keeper(store)._forked()


def test_a_replacement_writer_takes_the_lease_over(store: EventStore, other: EventStore) -> None:
    session = CaptureSession(store, "replaced", writer="thread")
    assert session.flush(10)
    _writer_dies(store)
    replacement = lease_keeper(other)
    held = replacement.hold(session.id, take_over=True)
    other.append([_exchange_event(session.id, EventKind.REQUEST, 0)])
    assert _lease_rows(store) == [(session.id, replacement.holder)]
    assert held.current_session_id == session.id and held.continuations == 0
    assert repair(store).sessions_closed == []  # live, under its new holder
    other.append([Event(session.id, EventKind.SESSION_CLOSE, None)])
    held.release()
    assert _lease_rows(store) == [] and store.find_session(session.id).closed
    assert _named(store, "replaced") == [session.id]
    session.sink.close()


def test_a_replacement_writer_for_a_repaired_session_goes_on_in_a_continuation(
    store: EventStore, other: EventStore
) -> None:
    session = CaptureSession(store, "replaced", writer="thread", labels={"k": "v"})
    assert session.flush(10)
    _writer_dies(store)
    assert repair(other, force=True).sessions_closed == [session.id]
    replacement = lease_keeper(other)
    held = replacement.hold(session.id, take_over=True)
    other.append([_exchange_event(session.id, EventKind.REQUEST, 0)])
    [old, new] = _named(store, "replaced")
    assert old == session.id and held.current_session_id == new
    assert store.find_session(new).labels == {"k": "v"}
    assert next(iter(store.session_events(new))).meta["continues"] == old
    [x] = store.exchanges(new)
    assert x.method == "POST"
    assert _lease_rows(store) == [(new, replacement.holder)]
    held.release()
    session.sink.close()


_XID = "9" * 32


def _exchange_event(session_id: str, kind: EventKind, seq: int) -> Event:
    return Event(
        session_id, kind, seq, _XID, meta={"method": "POST", "url": "https://x/v1/responses"}
    )


@pytest.mark.postgres
def test_a_database_outage_is_logged_once_and_the_leases_renewed_after_it(
    pg_server: object, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg

    from recorder.lease import LeaseKeeper
    from recorder.store import migrate

    migrate.upgrade(pg_url)
    name = sa.make_url(pg_url).database
    admin = pg_server.admin_url  # type: ignore[attr-defined]
    with EventStore.open(pg_url) as store:
        # Renewed by hand below: the background renewal would not come for 50 s.
        keeper = LeaseKeeper(store, duration=60, renew_every=50)
        session = CaptureSession(store, "outage", writer="thread")
        assert session.flush(10)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        try:
            for _ in range(3):
                assert keeper.renew() == set()  # failed, but not lost
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert keeper.renewal_failures == 3
        warnings = [r.getMessage() for r in caplog.records if "renew" in r.getMessage()]
        assert len(warnings) == 1 and "could not renew" in warnings[0]
        assert keeper.renew() == set() and keeper.renewal_failures == 0
        assert "renewed again" in caplog.records[-1].getMessage()
        assert read_leases(store, [session.id])[session.id].live
        session.close()


def test_a_lease_revoked_between_two_sessions_appends_is_still_noticed(
    store: EventStore, other: EventStore
) -> None:
    """Two sessions of one recorder: a repair of one is seen even if the other appends first."""
    one = CaptureSession(store, "one", writer="thread")
    two = CaptureSession(store, "two", writer="thread")
    assert one.flush(10) and two.flush(10)
    assert repair(other, force=True, session_ids=[two.id]).sessions_closed == [two.id]
    _exchange_with_frames(one, 1).finish()
    assert one.flush(10)
    _exchange_with_frames(two, 1).finish()
    two.close()
    one.close()
    assert _named(store, "one") == [one.id]
    [old, new] = _named(store, "two")
    assert old == two.id and store.exchanges(old) == []
    assert len(store.exchanges(new)) == 1
    assert store.verify().ok


def test_a_lone_recorder_checks_its_lease_without_a_statement(store: EventStore) -> None:
    """Nobody else appended since its last append: no repair can have revoked its lease."""
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    session = CaptureSession(store, "alone", writer="thread")
    assert session.flush(10)
    engines = {store.engine, store.write_engine}  # appends have their own
    before = store.last_position()
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(5):
            _exchange_with_frames(session, 3).finish()
            assert session.flush(10)
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", seen)
    # Five exchanges of 6 events were appended, each append reading the log's
    # head under the write lock: through SQLAlchemy on SQLite; on PostgreSQL
    # in the round trip that takes the lock, which no cursor event shows.
    assert store.last_position() >= before + 5 * 6
    if store.backend == "sqlite":
        assert len([s for s in statements if "ORDER BY position DESC" in s]) >= 5
    assert [s for s in statements if "leases" in s] == []
    session.close()


_FORK = """
import os, sys
from recorder.capture import CaptureSession
from recorder.lease import lease_keeper
from recorder.store import EventStore
store = EventStore.open({url!r})
session = CaptureSession(store, "parent", writer="thread")
assert session.flush(10)
keeper = lease_keeper(store)
parent_holder = keeper.holder
pid = os.fork()
if pid == 0:
    # The parent's leases are the parent's: the fork holds, renews and releases none of them.
    forked = lease_keeper(store)
    print(forked is keeper, forked.held(), forked.holder != parent_holder, forked.renew(),
          flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print(keeper.held() == [session.id], keeper.renew(), flush=True)
session.close()
"""


def test_a_forked_process_holds_none_of_its_parents_leases(store: EventStore) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _FORK.format(url=store.url)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True [] True set()", "True set()"]
    assert _lease_rows(store) == []
    assert store.find_session(_named(store, "parent")[0]).closed

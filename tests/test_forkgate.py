"""A fork never copies a database driver call of codetape's own threads in progress.

SQLite and libpq hold mutexes while a call runs; a fork copies them held and
the child hangs when it next touches that connection (even to free it at
exit). The writer's appends and the lease renewer's transactions run inside
``driver_call``; a fork waits until none is in progress.
"""

from __future__ import annotations

import os
import threading

import sqlalchemy as sa

from recorder.capture import CaptureSession
from recorder.events import Event, EventKind
from recorder.lease import lease_keeper
from recorder.store import EventStore, forkgate


def _fork_and_report(flag: dict[str, bool]) -> int:
    """Fork; the child exits 0 if ``flag['left']`` was already set in the copy it got."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if flag["left"] else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_fork_waits_until_a_driver_call_in_progress_has_ended() -> None:
    inside, flag = threading.Event(), {"left": False}

    def background_call() -> None:
        with forkgate.driver_call():
            inside.set()
            # Long enough that a fork not waiting would certainly come first.
            threading.Event().wait(0.5)
            flag["left"] = True

    thread = threading.Thread(target=background_call)
    thread.start()
    inside.wait()
    # The child's memory is the parent's at the fork: "left" is set only if the fork waited.
    assert _fork_and_report(flag) == 0
    thread.join()
    assert forkgate.forks_not_held() == 0


def test_a_fork_from_inside_a_driver_call_does_not_wait_for_itself() -> None:
    with forkgate.driver_call():
        assert _fork_and_report({"left": True}) == 0
    assert forkgate.forks_not_held() == 0


def test_a_call_starting_during_a_fork_waits_for_the_fork() -> None:
    forkgate._before_fork()
    started = threading.Event()

    def late_call() -> None:
        with forkgate.driver_call():
            started.set()

    thread = threading.Thread(target=late_call)
    thread.start()
    try:
        assert not started.wait(0.2)  # held back while the fork is under way
    finally:
        forkgate._after_fork_in_parent()
    thread.join()
    assert started.is_set()


def test_recording_and_lease_work_happen_inside_driver_calls(store: EventStore) -> None:
    """Every statement codetape's background threads send is one a fork would wait for."""
    outside: list[str] = []

    def check(conn: object, cursor: object, statement: str, *args: object) -> None:
        if threading.current_thread() is not threading.main_thread() and not forkgate._active:
            outside.append(f"{threading.current_thread().name}: {statement[:60]}")

    engines = {store.engine, store.write_engine}
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", check)
    try:
        with CaptureSession(store, "gated", writer="thread") as session:
            keeper = lease_keeper(store)
            for _ in range(3):
                session.sink.submit(Event(session.id, EventKind.CAPTURE_GAP, None, meta={}))
                session.flush()
                keeper.renew()  # from this thread: not counted; the renewer's own runs are
            threading.Event().wait(keeper.renew_every * 2)
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", check)
    assert outside == []

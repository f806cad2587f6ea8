"""Forks wait until no codetape thread is inside a database driver call.

A thread inside SQLite or libpq holds the driver's mutexes (a connection's,
and for SQLite some process-wide ones). ``os.fork`` copies them held into the
child, where no thread will ever release them: the child then hangs the
first time it touches that connection, if only to free it when it exits.
That is how a worker forked while a recording was being written hung at
exit, and lost what it had recorded.

Guarantees: the database work of codetape's background threads (the
writer's appends, the lease renewer's transactions) runs inside
:func:`driver_call`; where ``os.register_at_fork`` exists, a fork first waits
until none is inside one (new ones wait for the fork to finish), for at most
:data:`FORK_WAIT` seconds. A fork that could not wait that long goes ahead,
is counted in :func:`forks_not_held` and logged: its child must not use the
store the busy thread was using. Where the hook is missing, nothing waits:
flush a session (:meth:`~recorder.capture.CaptureSession.flush`) before
forking there. Calls nest; a thread never waits for its own fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["FORK_WAIT", "driver_call", "forks_not_held"]

log = logging.getLogger("codetape.capture")

FORK_WAIT = 5.0
"""Seconds a fork waits for a driver call in progress (one short lock-wait attempt, normally)."""

_cond = threading.Condition()
_active = 0
_forking = False
_not_held = 0
_local = threading.local()


@contextmanager
def driver_call() -> Iterator[None]:
    """Mark this thread as inside the database driver for the block; a fork waits for it."""
    global _active
    depth: int = getattr(_local, "depth", 0)
    if depth == 0:
        with _cond:
            while _forking:
                _cond.wait()
            _active += 1
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth
        if depth == 0:
            with _cond:
                _active -= 1
                _cond.notify_all()


def forks_not_held() -> int:
    """How many forks in this process went ahead while a driver call was still running."""
    return _not_held


def _before_fork() -> None:
    global _forking, _not_held
    own = 1 if getattr(_local, "depth", 0) else 0  # never wait for this thread's own call
    with _cond:
        _forking = True
        deadline = time.monotonic() + FORK_WAIT
        while _active > own and (remaining := deadline - time.monotonic()) > 0:
            _cond.wait(remaining)
        if _active > own:
            _not_held += 1
            log.warning(
                "codetape: forking while a recorder thread is still inside the database "
                "driver after %.0f s; the child must not use that store",
                FORK_WAIT,
            )


def _after_fork_in_parent() -> None:
    global _forking
    with _cond:
        _forking = False
        _cond.notify_all()


def _after_fork_in_child() -> None:
    # Only the forking thread exists here: no call is in progress, whatever the
    # parent's counters said, and the condition's lock may have been copied held.
    global _cond, _active, _forking, _local
    _cond = threading.Condition()
    _active = 0
    _forking = False
    _local = threading.local()


if hasattr(os, "register_at_fork"):  # absent on some platforms (see the docstring)
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )

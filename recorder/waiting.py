"""Threads and event loops waiting for something another thread makes true.

Guarantee: a thread waits on a condition variable; an event loop awaits a
future that the waking thread resolves with ``call_soon_threadsafe``, so an
asyncio producer never blocks its loop while it waits. Waiters re-check their
predicate at least every ``recheck`` seconds, for predicates that change with
time alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

__all__ = ["Waiters"]


class Waiters:
    """Waiters on ``lock``: call :meth:`wake` (lock held) whenever their predicate may change."""

    def __init__(self, lock: threading.Lock, recheck: float = 0.05) -> None:
        self.lock = lock
        self.recheck = recheck
        self._condition = threading.Condition(lock)
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def wait(self, blocked: Callable[[], bool], timeout: float | None = None) -> bool:
        """With the lock held, wait until ``blocked()`` is False; False if ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while blocked():
            remaining = self.recheck
            if deadline is not None:
                remaining = min(remaining, deadline - time.monotonic())
                if remaining <= 0:
                    return False
            self._condition.wait(remaining)
        return True

    async def wait_async(self, blocked: Callable[[], bool]) -> None:
        """Await (without the lock) until ``blocked()``, checked under the lock, is False."""
        loop = asyncio.get_running_loop()
        while True:
            with self.lock:
                if not blocked():
                    return
                future: asyncio.Future[None] = loop.create_future()
                self._futures.append((loop, future))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), self.recheck)

    def wake(self) -> None:
        """Wake every waiter (lock held) to check its predicate again."""
        self._condition.notify_all()
        if self._futures:
            futures, self._futures = self._futures, []
            for loop, future in futures:
                # A closed loop has nobody waiting any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

"""Work to do when this process ends normally, also as a ``multiprocessing`` child.

``atexit`` handlers do not run in a child that ``multiprocessing`` forked: it
ends with ``os._exit`` once multiprocessing's own finalizers have run. The
functions given to :func:`at_exit` run in both cases (once each: they must
tolerate a second call), so a forked worker stores what it recorded before
it goes. A process killed, or ended with a bare ``os._exit``, runs nothing.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable

__all__ = ["at_exit"]

log = logging.getLogger("codetape.capture")

_functions: list[Callable[[], None]] = []


def at_exit(func: Callable[[], None]) -> None:
    """Run ``func`` when this process (or a forked multiprocessing child of it) exits."""
    _functions.append(func)
    atexit.register(func)


def _run_all() -> None:
    for func in list(_functions):
        try:
            func()
        except Exception:
            log.exception("codetape: cleanup at exit failed")


def _finalize_in_child(_owner: object) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _run_all, exitpriority=10)


def _after_fork_in_child() -> None:
    # multiprocessing clears the finalizers a child inherits, then runs the
    # callbacks registered for after the fork: register ours from one of those.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_run_all, _finalize_in_child)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

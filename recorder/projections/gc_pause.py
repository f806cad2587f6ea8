"""The cyclic garbage collector paused around batch work.

Guarantee: :func:`no_gc` turns the collector off for its block and back on
only if it was on when the block began, so nested pauses (and a read-ahead
thread pausing it too) leave it as they found it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["no_gc"]


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic collector off: a batch allocates many small, acyclic objects
    (rows, events, row tuples), and the collector's repeated passes over them
    cost more than the batch's own work. Only whoever turned it off turns it
    back on, so nesting (or the read-ahead thread) leaves it as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

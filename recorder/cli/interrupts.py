"""Ctrl-C during a write: stop at once, except while a commit may be under way.

Guarantees: inside :class:`CommitGuard`, SIGINT raises ``KeyboardInterrupt``
as usual until the database is asked to commit; from then on it is only
noted, and :meth:`CommitGuard.settle` raises it once the caller has learnt
whether the commit landed. So a caller always knows what was written when it
reports an interruption: never "nothing written" after a commit, never a
commit it did not count. A caller that commits in batches settles after each
one (``codetape import`` does), so a Ctrl-C waits for one commit at most,
never for the rest of the work. Once stopping, further Ctrl-Cs are ignored, so the
rollback and the connection's close run to the end (no second traceback).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["CommitGuard"]


class CommitGuard:
    """Defers SIGINT from the start of a commit on ``engine`` until :meth:`settle`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.requested = False
        self.committing = False
        self.stopping = False
        self._previous: Any = None
        self._installed = False

    def _on_commit(self, _conn: Any) -> None:
        self.committing = True

    def _on_sigint(self, _signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            return
        self.requested = True
        if self.committing:
            return
        self.stopping = True
        raise KeyboardInterrupt

    def settle(self) -> None:
        """The last write's fate is known: raise a Ctrl-C that came meanwhile."""
        self.committing = False
        if self.requested and not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt

    def __enter__(self) -> CommitGuard:
        event.listen(self.engine, "commit", self._on_commit)
        # Signal handlers can only be set from the main thread; elsewhere
        # (an embedding application) Ctrl-C is not ours to handle.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The work is over: from here to restore(), Ctrl-C must not cut the cleanup.
        self.stopping = True
        event.remove(self.engine, "commit", self._on_commit)

    def restore(self) -> None:
        """Give SIGINT back to its previous handler (after the store is closed)."""
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

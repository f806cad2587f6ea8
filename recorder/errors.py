"""The errors codetape raises on purpose.

Every error a user can cause (bad input, a missing file, an unreachable or
un-upgraded database, an unknown session) is a :class:`CodetapeError` whose
message is one line naming the problem; the CLI prints that line and exits
non-zero instead of showing a traceback. Driver errors are translated into
these in one place, :mod:`recorder.store.engine`.
"""

from __future__ import annotations

__all__ = [
    "CodetapeError",
    "DatabaseUnavailable",
    "ImmutableLogError",
    "NotUpgraded",
    "SessionExists",
    "StoreBusy",
    "StoreError",
    "TapeError",
    "UnknownSession",
]


class CodetapeError(Exception):
    """Base class: a problem the user can understand and fix from the message."""


class StoreError(CodetapeError):
    """The store could not do what was asked."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached or opened."""


class StoreBusy(StoreError):
    """The database is locked by another writer: a delay, not a refusal (retry later)."""


class NotUpgraded(StoreError):
    """The database schema is missing or older than this codetape."""


class ImmutableLogError(StoreError):
    """Something tried to change or remove an event row."""


class UnknownSession(CodetapeError):
    """No session matches the given name or id."""


class SessionExists(StoreError):
    """An import would duplicate a session that is already in the log."""


class TapeError(CodetapeError):
    """A tape file is malformed; the message names the line."""

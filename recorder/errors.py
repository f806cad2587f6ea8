"""The errors codetape raises on purpose.

Every error a user can cause (bad input, a missing file, an unreachable or
un-upgraded database, an unknown session) is a :class:`CodetapeError` whose
message is one line naming the problem; the CLI prints that line and exits
non-zero instead of showing a traceback. Driver errors are translated into
these in one place, :mod:`recorder.store.engine`.
"""

from __future__ import annotations

__all__ = [
    "AmbiguousSession",
    "CodetapeError",
    "DatabaseUnavailable",
    "ImmutableLogError",
    "NewerSchema",
    "NoSuchDatabase",
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


class NoSuchDatabase(DatabaseUnavailable):
    """The database named does not exist (a SQLite file, a PostgreSQL database)."""


class NotUpgraded(StoreError):
    """The database schema is missing or older than this codetape."""


class NewerSchema(StoreError):
    """The database was written by a newer codetape (a schema revision this one does not know)."""


class ImmutableLogError(StoreError):
    """Something tried to change or remove an event row."""


class UnknownSession(CodetapeError):
    """No session matches the given name or id."""


class AmbiguousSession(UnknownSession):
    """Several sessions share the name given.

    ``candidates`` holds ``(id, description)`` for each, oldest first, so that
    the user can pick one by id.
    """

    def __init__(self, message: str, candidates: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.candidates = candidates


class SessionExists(StoreError):
    """An import would duplicate a session that is already in the log."""


class TapeError(CodetapeError):
    """A tape file is malformed; the message names the line."""

"""Offline replay of recorded sessions through the real OpenAI SDK.

Guarantees: what this package exports answers requests only from recordings
(tapes or database sessions) unless a record mode that records is chosen
explicitly; see each module's docstring for its own guarantees.
"""

from replay.matching import MatchOptions, NoMatch, UnplayedExchanges
from replay.source import Exchange, Recording, load, load_session, load_tape
from replay.transport import AsyncReplayTransport, Pace, ReplayTransport

__all__ = [
    "AsyncReplayTransport",
    "Exchange",
    "MatchOptions",
    "NoMatch",
    "Pace",
    "Recording",
    "ReplayTransport",
    "UnplayedExchanges",
    "load",
    "load_session",
    "load_tape",
]

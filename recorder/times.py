"""Times a user types (``2026-03-31``, an ISO 8601 time), as the log's nanoseconds.

Guarantees: :func:`parse_instant` turns a date (midnight UTC) or an ISO 8601
time (UTC unless it carries an offset) into nanoseconds since the epoch,
exactly (no float rounding); a time the log cannot hold, before
:data:`EARLIEST` or after :data:`LATEST` (a signed 64-bit count of
nanoseconds, the stored ``at_ns``), is a :class:`BadTime` naming that range,
as is text that is not a time. Every time option of the CLI goes through it.
"""

from __future__ import annotations

import datetime as dt

from recorder.errors import CodetapeError

__all__ = ["EARLIEST", "LATEST", "MAX_NS", "MIN_NS", "BadTime", "parse_instant"]

MIN_NS = -(2**63)
MAX_NS = 2**63 - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
EARLIEST = "1677-09-22"
"""The first whole day the log's times reach (they start 1677-09-21 00:12:43 UTC)."""
LATEST = "2262-04-11"
"""The last whole day the log's times reach (they end 2262-04-11 23:47:16 UTC)."""
FORMS = "YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"


class BadTime(CodetapeError):
    """Text that is not a time, or a time outside what the log can hold."""


def parse_instant(text: str) -> int:
    """``text`` (a date or an ISO 8601 time) as nanoseconds since the epoch."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadTime(f"{text!r} is not a time: use {FORMS}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    ns = (parsed - _EPOCH) // _MICROSECOND * 1000
    if not MIN_NS <= ns <= MAX_NS:
        raise BadTime(
            f"{text!r} is outside the times codetape can store: give one from "
            f"{EARLIEST} to {LATEST}"
        )
    return ns

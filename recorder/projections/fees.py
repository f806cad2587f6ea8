"""Container fees from a dated fee table (shipped as data, overridable by the user).

Guarantees: the fee for a container depends only on the table, its memory
tier, its creation day (UTC) and its recorded lifetime; every :class:`Fee`
says whether it is ``exact`` and names the rule that produced it. Rules:

* ``per_container``: the tier's price, once. Exact (the tier is recorded or is
  OpenAI's default ``1g``).
* ``per_session``: the tier's price per started ``session_minutes`` window
  of activity, counted as ``1 + floor((last activity − creation) / window)``.
  Estimated: the log sees requests, not OpenAI's session boundaries.
* ``per_minute``: the tier's per-minute price × ``max(minimum_minutes,
  ceil(lifetime minutes))``, lifetime = creation → deletion if recorded, else
  last activity + the idle timeout (the container stays alive until it
  expires). Estimated, for the same reason.

Money is :class:`decimal.Decimal` throughout; nothing is rounded until display.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path

from recorder.errors import CodetapeError

__all__ = ["Fee", "FeeTable", "FeeTableError", "Period", "load_fee_table"]

_NS_PER_MINUTE = 60 * 1_000_000_000
RULES = ("per_container", "per_session", "per_minute")


class FeeTableError(CodetapeError):
    """A fee table file is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.date | None
    until: dt.date | None
    rule: str
    prices: dict[str, Decimal]
    session_minutes: int = 20
    minimum_minutes: int = 0

    def covers(self, day: dt.date) -> bool:
        return (self.start is None or day >= self.start) and (
            self.until is None or day <= self.until
        )


@dataclass(frozen=True, slots=True)
class Fee:
    amount: Decimal | None
    exact: bool
    rule: str
    """Human-readable: which table period and rule, and the arithmetic."""

    @property
    def basis(self) -> str:
        if self.amount is None:
            return "unknown"
        return "exact" if self.exact else "estimated"


@dataclass(frozen=True, slots=True)
class FeeTable:
    source: str
    as_of: str
    periods: tuple[Period, ...]

    def period(self, day: dt.date) -> Period | None:
        for period in self.periods:
            if period.covers(day):
                return period
        return None

    def fee(
        self,
        memory: str | None,
        created_at_ns: int,
        last_activity_ns: int,
        end_ns: int,
    ) -> Fee:
        """The fee of one container created at ``created_at_ns`` (alive until ``end_ns``)."""
        day = dt.datetime.fromtimestamp(created_at_ns // 1_000_000_000, dt.UTC).date()
        period = self.period(day)
        if period is None:
            return Fee(None, False, f"no fee-table period covers {day} ({self.source})")
        tier = memory or "1g"
        price = period.prices.get(tier)
        if price is None:
            return Fee(None, False, f"fee table has no price for memory tier {tier!r}")
        where = f"{period.rule} from {period.start or 'the start'} to {period.until or 'now'}"
        if period.rule == "per_container":
            return Fee(price, True, f"{where}: {tier} ${price} per container")
        if period.rule == "per_session":
            active = max(last_activity_ns - created_at_ns, 0)
            sessions = 1 + active // (period.session_minutes * _NS_PER_MINUTE)
            return Fee(
                price * sessions,
                False,
                f"{where}: {sessions} started {period.session_minutes}-minute session(s) "
                f"× {tier} ${price} (sessions estimated from recorded activity)",
            )
        lifetime = max(end_ns - created_at_ns, 0)
        minutes = max(period.minimum_minutes, math.ceil(lifetime / _NS_PER_MINUTE))
        return Fee(
            price * minutes,
            False,
            f"{where}: {minutes} min × {tier} ${price}/min (minimum {period.minimum_minutes}; "
            "lifetime estimated as creation → deletion or last activity + idle timeout)",
        )


def _parse(raw: str, where: str) -> FeeTable:
    """The table in a fee file's text, validated by :class:`.fee_file.FeeFile`."""
    from recorder.projections.fee_file import parse_fee_file

    doc = parse_fee_file(raw, where)
    periods = tuple(
        Period(
            p.from_,
            p.until,
            p.rule,
            dict(p.prices),
            p.session_minutes,
            p.minimum_minutes,
        )
        for p in doc.periods
    )
    return FeeTable(doc.source or where, doc.as_of, periods)


def load_fee_table(path: Path | None = None) -> FeeTable:
    """The user's fee table at ``path``, else the one shipped with codetape."""
    if path is None:
        raw = (
            resources.files("recorder.projections")
            .joinpath("container_fees.json")
            .read_text(encoding="utf-8")
        )
        return _parse(raw, "codetape's container_fees.json")
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise FeeTableError(f"cannot read fee table {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise FeeTableError(
            f"fee table {path} is not UTF-8 text: give a JSON file shaped like the shipped one"
        ) from None
    return _parse(raw, str(path))

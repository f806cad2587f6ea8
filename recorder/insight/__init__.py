"""Insight over the log: the container reuse advisor.

The HTML session report is :mod:`recorder.report`, model migration :mod:`recorder.rerun`.

Guarantees: :func:`advise` reads the projections as caught up to the log's
head without writing, like every reader in :mod:`recorder.projections`
(:func:`read_advice` also says how far behind the stored ones are).
"""

from __future__ import annotations

from pathlib import Path

from recorder.insight.advisor import (
    Advice,
    AdviceTotal,
    AvoidableContainer,
    BadGrouping,
    PossibleUnattributed,
    advise_rows,
    parse_grouping,
)
from recorder.projections.fees import FeeTable, load_fee_table
from recorder.projections.overlay import Read, reading
from recorder.store.store import EventStore

__all__ = [
    "Advice",
    "AdviceTotal",
    "AvoidableContainer",
    "BadGrouping",
    "PossibleUnattributed",
    "advise",
    "read_advice",
]


def advise(
    store: EventStore,
    *,
    by: str = "session",
    idle_minutes: int | None = None,
    fees: Path | FeeTable | None = None,
) -> Advice:
    """The container reuse advice over the whole log, grouped ``by`` session or ``label=KEY``."""
    return read_advice(store, by=by, idle_minutes=idle_minutes, fees=fees).value


def read_advice(
    store: EventStore,
    *,
    by: str = "session",
    idle_minutes: int | None = None,
    fees: Path | FeeTable | None = None,
) -> Read[Advice]:
    """:func:`advise`, and how far behind the log the stored projections were."""
    parse_grouping(by)  # a bad grouping fails before any work
    table = fees if isinstance(fees, FeeTable) else load_fee_table(fees)
    sessions = {s.id: (s.name, s.labels) for s in store.sessions()}
    with reading(store, ["costs", "containers", "stages"]) as view:
        advice = advise_rows(view.conn, table, sessions, by=by, idle_minutes=idle_minutes)
        return Read(advice, view.head, view.behind)

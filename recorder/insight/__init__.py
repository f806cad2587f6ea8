"""Insight over the log: the container reuse advisor.

The HTML session report is :mod:`recorder.report`, model migration :mod:`recorder.rerun`.

Guarantees: :func:`advise` catches the projections it reads up to the log's
head first, like every reader in :mod:`recorder.projections`.
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
from recorder.projections.runner import catch_up
from recorder.store.engine import translate_errors
from recorder.store.store import EventStore

__all__ = [
    "Advice",
    "AdviceTotal",
    "AvoidableContainer",
    "BadGrouping",
    "PossibleUnattributed",
    "advise",
]


def advise(
    store: EventStore,
    *,
    by: str = "session",
    idle_minutes: int | None = None,
    fees: Path | FeeTable | None = None,
) -> Advice:
    """The container reuse advice over the whole log, grouped ``by`` session or ``label=KEY``."""
    parse_grouping(by)  # a bad grouping fails before any work
    table = fees if isinstance(fees, FeeTable) else load_fee_table(fees)
    catch_up(store, ["costs", "containers", "stages"])
    sessions = {s.id: (s.name, s.labels) for s in store.sessions()}
    with translate_errors(store.url), store.engine.connect() as conn:
        return advise_rows(conn, table, sessions, by=by, idle_minutes=idle_minutes)

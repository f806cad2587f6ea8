"""Projections: derived, rebuildable read models over the event log.

Five projections — ``chunks``, ``stages``, ``audit``, ``costs``,
``containers`` — each keep a checkpoint written in the same transaction as
their rows (see :mod:`recorder.projections.runner`). The read functions here
read them as caught up to the log's head without writing anything (stored
rows plus the log's tail, folded per connection: see
:mod:`recorder.projections.overlay`), so a reader never sees a stale view and
a role that may only SELECT can run every report; the ``read_*`` forms also say
how far behind the stored projections are. :func:`catch_up` stores that work;
:func:`rebuild` empties and replays them from position 0, and gives the same
tables as any sequence of catch-ups.
"""

from __future__ import annotations

from pathlib import Path

from recorder.projections.audit import AuditEntry, AuditProjection, audit_rows
from recorder.projections.chunks import Chunk, ChunksProjection, chunk_rows
from recorder.projections.containers import ContainerInfo, ContainersProjection, container_rows
from recorder.projections.costs import GROUPINGS, CostReport, CostsProjection, cost_report
from recorder.projections.fees import FeeTable, load_fee_table
from recorder.projections.overlay import Read, View, reading
from recorder.projections.projection import Projection, UnknownProjection
from recorder.projections.runner import catch_up, checkpoints, rebuild
from recorder.projections.stages import Stage, StagesProjection, stages_rows
from recorder.store.store import EventStore

__all__ = [
    "ALL",
    "GROUPINGS",
    "NAMES",
    "AuditEntry",
    "Chunk",
    "ContainerInfo",
    "CostReport",
    "FeeTable",
    "Projection",
    "Read",
    "Stage",
    "UnknownProjection",
    "View",
    "audit",
    "catch_up",
    "checkpoints",
    "chunks",
    "containers",
    "costs",
    "load_fee_table",
    "read_audit",
    "read_chunks",
    "read_containers",
    "read_costs",
    "read_stages",
    "reading",
    "rebuild",
    "stages",
]

ALL: tuple[type[Projection], ...] = (
    ChunksProjection,
    StagesProjection,
    AuditProjection,
    CostsProjection,
    ContainersProjection,
)
NAMES = tuple(p.name for p in ALL)


def read_chunks(store: EventStore, session_id: str) -> Read[list[Chunk]]:
    """The session's stream as chunks (see :mod:`recorder.projections.chunks`)."""
    with reading(store, ["chunks"]) as view:
        return Read(chunk_rows(view.conn, session_id), view.head, view.behind)


def read_stages(store: EventStore, session_id: str | None = None) -> Read[list[Stage]]:
    """Code interpreter call timelines, of one session or all."""
    with reading(store, ["stages"]) as view:
        return Read(stages_rows(view.conn, session_id), view.head, view.behind)


def read_audit(store: EventStore, session_id: str | None = None) -> Read[list[AuditEntry]]:
    """Every piece of code that ran, in log order."""
    with reading(store, ["audit"]) as view:
        return Read(audit_rows(view.conn, session_id), view.head, view.behind)


def read_containers(store: EventStore) -> Read[list[ContainerInfo]]:
    """Every container seen; judge each at a time with :meth:`ContainerInfo.state_at`."""
    with reading(store, ["containers"]) as view:
        return Read(container_rows(view.conn), view.head, view.behind)


def read_costs(
    store: EventStore,
    *,
    by: str = "session",
    since_ns: int | None = None,
    until_ns: int | None = None,
    fees: Path | FeeTable | None = None,
    idle_minutes: int | None = None,
) -> Read[CostReport]:
    """The cost report, grouped ``by`` session, day, model or label."""
    if by not in GROUPINGS:
        raise UnknownProjection(f"cannot group costs by {by!r}: choose {', '.join(GROUPINGS)}")
    table = fees if isinstance(fees, FeeTable) else load_fee_table(fees)
    sessions = {s.id: (s.name, s.labels) for s in store.sessions()}
    with reading(store, ["costs", "containers"]) as view:
        report = cost_report(
            view.conn,
            table,
            by=by,
            since_ns=since_ns,
            until_ns=until_ns,
            sessions=sessions,
            idle_minutes=idle_minutes,
        )
        return Read(report, view.head, view.behind)


def chunks(store: EventStore, session_id: str) -> list[Chunk]:
    """:func:`read_chunks`, just the chunks."""
    return read_chunks(store, session_id).value


def stages(store: EventStore, session_id: str | None = None) -> list[Stage]:
    """:func:`read_stages`, just the stages."""
    return read_stages(store, session_id).value


def audit(store: EventStore, session_id: str | None = None) -> list[AuditEntry]:
    """:func:`read_audit`, just the entries."""
    return read_audit(store, session_id).value


def containers(store: EventStore) -> list[ContainerInfo]:
    """:func:`read_containers`, just the containers."""
    return read_containers(store).value


def costs(
    store: EventStore,
    *,
    by: str = "session",
    since_ns: int | None = None,
    until_ns: int | None = None,
    fees: Path | FeeTable | None = None,
    idle_minutes: int | None = None,
) -> CostReport:
    """:func:`read_costs`, just the report."""
    return read_costs(
        store, by=by, since_ns=since_ns, until_ns=until_ns, fees=fees, idle_minutes=idle_minutes
    ).value

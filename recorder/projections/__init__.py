"""Projections: derived, rebuildable read models over the event log.

Five projections — ``chunks``, ``stages``, ``audit``, ``costs``,
``containers`` — each keep a checkpoint written in the same transaction as
their rows (see :mod:`recorder.projections.runner`). The read functions here
catch the projections they read up to the log's head first, so a reader never
sees a stale view; :func:`rebuild` empties and replays them from position 0,
and gives the same tables as any sequence of catch-ups.
"""

from __future__ import annotations

from pathlib import Path

from recorder.projections.audit import AuditEntry, AuditProjection, audit_rows
from recorder.projections.chunks import Chunk, ChunksProjection, chunk_rows
from recorder.projections.containers import ContainerInfo, ContainersProjection, container_rows
from recorder.projections.costs import GROUPINGS, CostReport, CostsProjection, cost_report
from recorder.projections.fees import FeeTable, load_fee_table
from recorder.projections.runner import (
    Projection,
    UnknownProjection,
    catch_up,
    checkpoints,
    rebuild,
)
from recorder.projections.stages import Stage, StagesProjection, stages_rows
from recorder.store.engine import translate_errors
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
    "Stage",
    "UnknownProjection",
    "audit",
    "catch_up",
    "checkpoints",
    "chunks",
    "containers",
    "costs",
    "load_fee_table",
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


def chunks(store: EventStore, session_id: str) -> list[Chunk]:
    """The session's stream as chunks (see :mod:`recorder.projections.chunks`)."""
    catch_up(store, ["chunks"])
    with translate_errors(store.url), store.engine.connect() as conn:
        return chunk_rows(conn, session_id)


def stages(store: EventStore, session_id: str | None = None) -> list[Stage]:
    """Code interpreter call timelines, of one session or all."""
    catch_up(store, ["stages"])
    with translate_errors(store.url), store.engine.connect() as conn:
        return stages_rows(conn, session_id)


def audit(store: EventStore, session_id: str | None = None) -> list[AuditEntry]:
    """Every piece of code that ran, in log order."""
    catch_up(store, ["audit"])
    with translate_errors(store.url), store.engine.connect() as conn:
        return audit_rows(conn, session_id)


def containers(store: EventStore) -> list[ContainerInfo]:
    """Every container seen; judge each at a time with :meth:`ContainerInfo.state_at`."""
    catch_up(store, ["containers"])
    with translate_errors(store.url), store.engine.connect() as conn:
        return container_rows(conn)


def costs(
    store: EventStore,
    *,
    by: str = "session",
    since_ns: int | None = None,
    until_ns: int | None = None,
    fees: Path | FeeTable | None = None,
    idle_minutes: int | None = None,
) -> CostReport:
    """The cost report, grouped ``by`` session, day, model or label."""
    if by not in GROUPINGS:
        raise UnknownProjection(f"cannot group costs by {by!r}: choose {', '.join(GROUPINGS)}")
    table = fees if isinstance(fees, FeeTable) else load_fee_table(fees)
    catch_up(store, ["costs", "containers"])
    sessions = {s.id: (s.name, s.labels) for s in store.sessions()}
    with translate_errors(store.url), store.engine.connect() as conn:
        return cost_report(
            conn,
            table,
            by=by,
            since_ns=since_ns,
            until_ns=until_ns,
            sessions=sessions,
            idle_minutes=idle_minutes,
        )

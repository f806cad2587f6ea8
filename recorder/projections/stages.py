"""The stage timeline of every code interpreter call.

Guarantees: one row per call with the arrival offset (ns since the request
was sent, as captured) of each stage — started (``output_item.added``),
in_progress, first code delta, code done, interpreting, completed — and the
final status. Offsets are ``None`` when the recording holds no timing
(imports from other tools): durations are then reported as unknown, and only
the response's own ``created_at`` / ``completed_at`` (whole seconds, from
the API) are given as coarse timing. Nothing is interpolated.

Durations: code generation = code done − started; execution = completed −
interpreting (falling back to ``output_item.done`` when the ``completed``
event is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from recorder.projections.calls import CallsProjection
from recorder.projections.row_buffer import RowBuffer
from recorder.store.schema import pj_ci_stages

__all__ = ["Stage", "StagesProjection", "stages_rows"]


class StagesProjection(CallsProjection):
    name: ClassVar[str] = "stages"
    version: ClassVar[int] = 1
    tables = (pj_ci_stages,)

    def finish(self) -> None:
        rows = RowBuffer(pj_ci_stages, self.conn.dialect.name)
        for common, x, call in self.touched_calls():
            off = call["off"]
            rows.put(
                {
                    **common,
                    "output_index": call["output_index"],
                    "streamed": call["streamed"],
                    "started_ns": off["started"],
                    "in_progress_ns": off["in_progress"],
                    "first_delta_ns": off["first_delta"],
                    "code_done_ns": off["code_done"],
                    "interpreting_ns": off["interpreting"],
                    "completed_ns": off["completed"],
                    "item_done_ns": off["item_done"],
                    "delta_count": call["deltas"],
                    "response_created_at": x["created_at"],
                    "response_completed_at": x["completed_at"],
                }
            )
        rows.flush(self.conn)


def _diff(end: int | None, start: int | None) -> int | None:
    return None if end is None or start is None else end - start


@dataclass(frozen=True, slots=True)
class Stage:
    """One code interpreter call's timeline (offsets in ns since its request was sent)."""

    session_id: str
    exchange_id: str
    response_id: str | None
    call_id: str
    container_id: str | None
    status: str
    streamed: bool
    started_at_ns: int
    started_ns: int | None
    in_progress_ns: int | None
    first_delta_ns: int | None
    code_done_ns: int | None
    interpreting_ns: int | None
    completed_ns: int | None
    item_done_ns: int | None
    delta_count: int
    response_created_at: int | None
    response_completed_at: int | None

    @property
    def timed(self) -> bool:
        """True when the recording holds arrival offsets (a capture, not an import)."""
        return self.started_ns is not None

    @property
    def code_generation_ns(self) -> int | None:
        return _diff(self.code_done_ns, self.started_ns)

    @property
    def execution_ns(self) -> int | None:
        end = self.completed_ns if self.completed_ns is not None else self.item_done_ns
        return _diff(end, self.interpreting_ns)

    def to_json(self) -> dict[str, Any]:
        def ms(ns: int | None) -> float | None:
            return None if ns is None else round(ns / 1e6, 3)

        return {
            "session_id": self.session_id,
            "exchange_id": self.exchange_id,
            "response_id": self.response_id,
            "call_id": self.call_id,
            "container_id": self.container_id,
            "status": self.status,
            "streamed": self.streamed,
            "timing": "captured" if self.timed else "unknown (recording holds no arrival times)",
            "arrivals_ms": {
                "started": ms(self.started_ns),
                "in_progress": ms(self.in_progress_ns),
                "first_code_delta": ms(self.first_delta_ns),
                "code_done": ms(self.code_done_ns),
                "interpreting": ms(self.interpreting_ns),
                "completed": ms(self.completed_ns),
                "output_item_done": ms(self.item_done_ns),
            },
            "code_generation_ms": ms(self.code_generation_ns),
            "execution_ms": ms(self.execution_ns),
            "code_deltas": self.delta_count,
            "coarse": {
                "source": "response created_at/completed_at (API clock, whole seconds)",
                "response_created_at": self.response_created_at,
                "response_completed_at": self.response_completed_at,
            },
        }


def stages_rows(conn: sa.Connection, session_id: str | None = None) -> list[Stage]:
    """Stage rows (of one session, or all), in log order."""
    t = pj_ci_stages
    query = sa.select(t).order_by(t.c.first_position, t.c.output_index, t.c.call_id)
    if session_id is not None:
        query = query.where(t.c.session_id == session_id)
    result = []
    for r in conn.execute(query).mappings():
        result.append(
            Stage(
                session_id=r["session_id"],
                exchange_id=r["exchange_id"],
                response_id=r["response_id"],
                call_id=r["call_id"],
                container_id=r["container_id"],
                status=r["status"],
                streamed=bool(r["streamed"]),
                started_at_ns=r["started_at_ns"],
                started_ns=r["started_ns"],
                in_progress_ns=r["in_progress_ns"],
                first_delta_ns=r["first_delta_ns"],
                code_done_ns=r["code_done_ns"],
                interpreting_ns=r["interpreting_ns"],
                completed_ns=r["completed_ns"],
                item_done_ns=r["item_done_ns"],
                delta_count=r["delta_count"],
                response_created_at=r["response_created_at"],
                response_completed_at=r["response_completed_at"],
            )
        )
    return result

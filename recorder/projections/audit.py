"""The audit trail: every piece of code the code interpreter ran, in log order.

Guarantees: each entry's code, status and outputs are copied from recorded
events only; ``positions`` lists the log positions of the events that carry
them (``output_item.added``, ``code.done``, ``interpreting``, ``completed``,
``output_item.done``, the final response) and ``first_position`` ..
``last_position`` spans every event of the call, code deltas included, so
``codetape verify`` (which re-derives the hash chain over those positions)
vouches for the entry. ``outputs`` is ``None`` when the recording does not
hold them (the request did not ask for ``code_interpreter_call.outputs``),
which is different from an empty list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from recorder.projections.calls import CallsProjection
from recorder.projections.json_text import shared_json
from recorder.projections.row_buffer import RowBuffer
from recorder.store.schema import pj_audit

__all__ = ["AuditEntry", "AuditProjection", "audit_rows"]


class AuditProjection(CallsProjection):
    name: ClassVar[str] = "audit"
    version: ClassVar[int] = 2
    """2: outputs stored as compact JSON (the chunks projection's encoding)."""
    tables = (pj_audit,)

    def finish(self) -> None:
        rows = RowBuffer(pj_audit, self.conn.dialect.name)
        for common, _, call in self.touched_calls():
            rows.put(
                {
                    **common,
                    "code": call["code"],
                    # The chunks projection stores the same outputs: one encoding for both.
                    "outputs": None if call["outputs"] is None else shared_json(call["outputs"]),
                    "finished_at_ns": call["finished_at_ns"],
                    "last_position": call["last_position"],
                    "positions": json.dumps(sorted(call["positions"])),
                }
            )
        rows.flush(self.conn)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One piece of code that ran (or was about to), with where it came from."""

    session_id: str
    exchange_id: str
    response_id: str | None
    call_id: str
    container_id: str | None
    status: str
    code: str
    outputs: list[dict[str, Any]] | None
    started_at_ns: int
    finished_at_ns: int | None
    first_position: int
    last_position: int
    positions: list[int]

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "exchange_id": self.exchange_id,
            "response_id": self.response_id,
            "call_id": self.call_id,
            "container_id": self.container_id,
            "status": self.status,
            "code": self.code,
            "outputs": self.outputs,
            "outputs_recorded": self.outputs is not None,
            "started_at_ns": self.started_at_ns,
            "finished_at_ns": self.finished_at_ns,
            "log_positions": {
                "first": self.first_position,
                "last": self.last_position,
                "vouching": self.positions,
            },
        }


def audit_rows(conn: sa.Connection, session_id: str | None = None) -> list[AuditEntry]:
    t = pj_audit
    query = sa.select(t).order_by(t.c.first_position, t.c.call_id)
    if session_id is not None:
        query = query.where(t.c.session_id == session_id)
    return [
        AuditEntry(
            session_id=r["session_id"],
            exchange_id=r["exchange_id"],
            response_id=r["response_id"],
            call_id=r["call_id"],
            container_id=r["container_id"],
            status=r["status"],
            code=r["code"],
            outputs=None if r["outputs"] is None else json.loads(r["outputs"]),
            started_at_ns=r["started_at_ns"],
            finished_at_ns=r["finished_at_ns"],
            first_position=r["first_position"],
            last_position=r["last_position"],
            positions=json.loads(r["positions"]),
        )
        for r in conn.execute(query).mappings()
    ]

"""Projection tables: checkpoints and the read models rebuilt from the log.

Revision ID: 0002_projections
Revises: 0001_event_log
Create Date: 2026-11-25

These are ordinary mutable tables (no immutability triggers): every row in
them is derived from ``events`` and can be rebuilt from position 0, so
downgrading drops them without losing anything the log does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_projections"
down_revision: str | None = "0001_event_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = [
    "pj_container_files",
    "pj_containers",
    "pj_costs",
    "pj_audit",
    "pj_ci_stages",
    "pj_chunks",
    "pj_checkpoints",
]


def upgrade() -> None:
    op.create_table(
        "pj_checkpoints",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_at_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_pj_checkpoints"),
    )
    op.create_table(
        "pj_chunks",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("part", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("exchange_id", sa.String(64), nullable=True),
        sa.Column("response_id", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("stage", sa.String(16), nullable=True),
        sa.Column("call_id", sa.String(200), nullable=True),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "position", "part", name="pk_pj_chunks"),
    )
    op.create_table(
        "pj_ci_stages",
        sa.Column("exchange_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("response_id", sa.String(200), nullable=True),
        sa.Column("container_id", sa.String(200), nullable=True),
        sa.Column("output_index", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("started_at_ns", sa.BigInteger(), nullable=False),
        sa.Column("started_ns", sa.BigInteger(), nullable=True),
        sa.Column("in_progress_ns", sa.BigInteger(), nullable=True),
        sa.Column("first_delta_ns", sa.BigInteger(), nullable=True),
        sa.Column("code_done_ns", sa.BigInteger(), nullable=True),
        sa.Column("interpreting_ns", sa.BigInteger(), nullable=True),
        sa.Column("completed_ns", sa.BigInteger(), nullable=True),
        sa.Column("item_done_ns", sa.BigInteger(), nullable=True),
        sa.Column("delta_count", sa.Integer(), nullable=False),
        sa.Column("response_created_at", sa.BigInteger(), nullable=True),
        sa.Column("response_completed_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("exchange_id", "call_id", name="pk_pj_ci_stages"),
    )
    op.create_index(
        "ix_pj_ci_stages_session_id_first_position",
        "pj_ci_stages",
        ["session_id", "first_position"],
    )
    op.create_table(
        "pj_audit",
        sa.Column("exchange_id", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("response_id", sa.String(200), nullable=True),
        sa.Column("container_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("outputs", sa.Text(), nullable=True),
        sa.Column("started_at_ns", sa.BigInteger(), nullable=False),
        sa.Column("finished_at_ns", sa.BigInteger(), nullable=True),
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("positions", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("exchange_id", "call_id", name="pk_pj_audit"),
    )
    op.create_index(
        "ix_pj_audit_session_id_first_position", "pj_audit", ["session_id", "first_position"]
    )
    op.create_index("ix_pj_audit_first_position", "pj_audit", ["first_position"])
    op.create_table(
        "pj_costs",
        sa.Column("exchange_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("response_id", sa.String(200), nullable=True),
        sa.Column("at_ns", sa.BigInteger(), nullable=False),
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("requested_model", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("service_tier", sa.String(32), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=True),
        sa.Column("ci_container", sa.String(200), nullable=True),
        sa.Column("ci_memory", sa.String(8), nullable=True),
        sa.Column("ci_calls", sa.Integer(), nullable=False),
        sa.Column("containers", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("exchange_id", name="pk_pj_costs"),
    )
    op.create_index("ix_pj_costs_at_ns", "pj_costs", ["at_ns"])
    op.create_index("ix_pj_costs_session_id", "pj_costs", ["session_id"])
    op.create_table(
        "pj_containers",
        sa.Column("container_id", sa.String(200), nullable=False),
        sa.Column("memory", sa.String(8), nullable=True),
        sa.Column("created_via", sa.String(16), nullable=False),
        sa.Column("created_exchange_id", sa.String(64), nullable=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("created_at_ns", sa.BigInteger(), nullable=True),
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("first_activity_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_activity_ns", sa.BigInteger(), nullable=False),
        sa.Column("last_session_id", sa.String(64), nullable=False),
        sa.Column("expires_after_minutes", sa.Integer(), nullable=True),
        sa.Column("deleted_at_ns", sa.BigInteger(), nullable=True),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("exchanges", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("container_id", name="pk_pj_containers"),
    )
    op.create_index(
        "ix_pj_containers_created_exchange_id", "pj_containers", ["created_exchange_id"]
    )
    op.create_table(
        "pj_container_files",
        sa.Column("container_id", sa.String(200), nullable=False),
        sa.Column("file_id", sa.String(200), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("exchange_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("container_id", "file_id", name="pk_pj_container_files"),
    )


def downgrade() -> None:
    for table in _TABLES:
        op.drop_table(table)

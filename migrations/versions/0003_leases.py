"""Session leases: which live recorder holds which open session, until when.

Revision ID: 0003_leases
Revises: 0002_projections
Create Date: 2026-11-26

An ordinary mutable table beside the log (no immutability triggers): a row is
bookkeeping that a recorder renews and a repair deletes, never history.
Sessions recorded before this revision have no row and keep being judged by
their recorder's identity (see ``recorder.repair``); downgrading drops the
table, after which every open session is judged that way again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_leases"
down_revision: str | None = "0002_projections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("recorder", sa.Text(), nullable=False),
        sa.Column("duration_ns", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at_ns", sa.BigInteger(), nullable=False),
        sa.Column("renewed_at_ns", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_leases"),
    )
    op.create_index("ix_leases_holder", "leases", ["holder"])


def downgrade() -> None:
    op.drop_index("ix_leases_holder", table_name="leases")
    op.drop_table("leases")

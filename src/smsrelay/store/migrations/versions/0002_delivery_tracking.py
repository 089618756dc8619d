"""Delivery tracking: when a stored callback is next looked at by the delivery mapper.

`delivery_reports.next_check_at` is when a `received` callback is due for mapping (at once)
or an `orphan` for another look (its message's provider id may not be recorded yet); NULL
once it needs no more looks. The partial index holds only callbacks still to be mapped.

Revision ID: 0002
Revises: 0001
Create Date: 2024-06-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)
UNMAPPED = "state IN ('orphan', 'received')"


def upgrade() -> None:
    """Add `delivery_reports.next_check_at` and the index of callbacks due for mapping."""
    op.add_column("delivery_reports", sa.Column("next_check_at", Timestamp, nullable=True))
    op.create_index(
        "ix_delivery_reports_due",
        "delivery_reports",
        ["next_check_at", "id"],
        sqlite_where=sa.text(UNMAPPED),
        postgresql_where=sa.text(UNMAPPED),
    )


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index("ix_delivery_reports_due", table_name="delivery_reports")
    with op.batch_alter_table("delivery_reports") as batch:
        batch.drop_column("next_check_at")

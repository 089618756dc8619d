"""Campaigns: one body template sent to an audience, with progress, schedule and lease.

`campaigns` holds a campaign's definition, its progress counters (rows read, valid,
invalid, duplicates, suppressed, queued), the throttled schedule as far as it is handed
out, and which process is expanding it. `campaign_audience_parts` keeps the uploaded
audience in parts of consecutive rows until the runner has queued them.

Revision ID: 0005
Revises: 0004
Create Date: 2024-06-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types: a migration must not change when application code does.
Timestamp = sa.DateTime(timezone=True)
ZERO = sa.text("0")


def upgrade() -> None:
    """Create the campaign tables."""
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sender_name", sa.String(64), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("promotional", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("template_id", sa.String(128), nullable=True),
        sa.Column("template_variables", sa.JSON(), nullable=True),
        sa.Column("entity_id", sa.String(128), nullable=True),
        sa.Column("webhook_id", sa.String(64), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("audience_source", sa.String(8), nullable=False),
        sa.Column("audience_columns", sa.JSON(), nullable=False),
        sa.Column("phone_column", sa.String(128), nullable=False),
        sa.Column("default_region", sa.String(2), nullable=True),
        sa.Column("send_at", Timestamp, nullable=True),
        sa.Column("throttle_per_minute", sa.Integer(), nullable=True),
        sa.Column("quiet_hours", sa.JSON(), nullable=True),
        sa.Column("rows_total", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("rows_read", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("rows_valid", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("rows_invalid", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("duplicates", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("suppressed", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("queued", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("invalid_rows", sa.JSON(), nullable=True),
        sa.Column("parts_total", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("next_part", sa.Integer(), server_default=ZERO, nullable=False),
        sa.Column("expanded", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("schedule_anchor", Timestamp, nullable=True),
        sa.Column("schedule_state", sa.JSON(), nullable=True),
        sa.Column("last_slot_at", Timestamp, nullable=True),
        sa.Column("reschedule_from", Timestamp, nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", Timestamp, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("paused_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
    )
    op.create_index("ix_campaigns_status", "campaigns", ["status", "id"])
    op.create_table(
        "campaign_audience_parts",
        sa.Column("campaign_id", sa.String(26), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("first_row", sa.Integer(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_audience_parts_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "part", name="pk_campaign_audience_parts"),
    )


def downgrade() -> None:
    """Drop the campaign tables."""
    op.drop_table("campaign_audience_parts")
    op.drop_index("ix_campaigns_status", table_name="campaigns")
    op.drop_table("campaigns")

"""Scale-out: connector leases for exact rate limits across workers; shared batch traces.

Revision ID: 0007
Revises: 0006
Create Date: 2024-06-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create `connector_leases` and `send_exchanges`; add `message_events.exchange_id`."""
    op.create_table(
        "connector_leases",
        sa.Column("connector_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("tokens", sa.Float(), nullable=True),
        sa.Column("tokens_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("connector_id", name="pk_connector_leases"),
    )
    op.create_table(
        "send_exchanges",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_send_exchanges"),
    )
    op.add_column("message_events", sa.Column("exchange_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Drop what `upgrade` added."""
    with op.batch_alter_table("message_events") as batch:
        batch.drop_column("exchange_id")
    op.drop_table("send_exchanges")
    op.drop_table("connector_leases")

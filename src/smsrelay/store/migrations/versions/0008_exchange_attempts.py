"""Batch attempts folded into their exchange: `send_exchanges.attempts`.

A request that carried several messages stores each message's own part of its attempt
entry (attempt number, outcome, provider ids, error) in one JSON map on the exchange row,
keyed by message id, and the message's status event points to the exchange: one history
row per message instead of two. `get_message` rebuilds the attempt entry from it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `send_exchanges.attempts`."""
    with op.batch_alter_table("send_exchanges") as batch:
        batch.add_column(sa.Column("attempts", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop `send_exchanges.attempts`."""
    with op.batch_alter_table("send_exchanges") as batch:
        batch.drop_column("attempts")

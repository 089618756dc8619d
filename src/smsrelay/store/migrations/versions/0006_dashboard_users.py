"""Dashboard: users (scrypt password hashes) and the sealed session-cookie signing key.

Revision ID: 0006
Revises: 0005
Create Date: 2024-06-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create `dashboard_users` and `dashboard_keys`."""
    op.create_table(
        "dashboard_users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("session_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_login_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dashboard_users"),
        sa.UniqueConstraint("name", name="uq_dashboard_users_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "dashboard_keys",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_dashboard_keys"),
    )


def downgrade() -> None:
    """Drop the dashboard's tables."""
    op.drop_table("dashboard_keys")
    op.drop_table("dashboard_users")

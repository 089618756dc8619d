"""Connector groups: ordered connectors behind one sender, for failover.

`connector_groups` names a group, `connector_group_members` lists its connectors in order
(a member goes when its connector is deleted), `sender_connector_groups` says which
senders point to a group instead of a single connector.

Revision ID: 0004
Revises: 0003
Create Date: 2024-06-12
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types: a migration must not change when application code does.
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the group tables."""
    op.create_table(
        "connector_groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_connector_groups"),
        sa.UniqueConstraint("name", name="uq_connector_groups_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "connector_group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["connector_groups.id"],
            name="fk_connector_group_members_group_id_connector_groups",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name="fk_connector_group_members_connector_id_connectors",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "position", name="pk_connector_group_members"),
    )
    op.create_index(
        "uq_connector_group_members_group_id_connector_id",
        "connector_group_members",
        ["group_id", "connector_id"],
        unique=True,
    )
    op.create_index(
        "ix_connector_group_members_connector_id", "connector_group_members", ["connector_id"]
    )
    op.create_table(
        "sender_connector_groups",
        sa.Column("sender_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sender_id"],
            ["senders.id"],
            name="fk_sender_connector_groups_sender_id_senders",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["connector_groups.id"],
            name="fk_sender_connector_groups_group_id_connector_groups",
        ),
        sa.PrimaryKeyConstraint("sender_id", name="pk_sender_connector_groups"),
    )
    op.create_index("ix_sender_connector_groups_group_id", "sender_connector_groups", ["group_id"])


def downgrade() -> None:
    """Drop the group tables (senders keep their first connector)."""
    op.drop_index("ix_sender_connector_groups_group_id", table_name="sender_connector_groups")
    op.drop_table("sender_connector_groups")
    op.drop_index("ix_connector_group_members_connector_id", table_name="connector_group_members")
    op.drop_index(
        "uq_connector_group_members_group_id_connector_id", table_name="connector_group_members"
    )
    op.drop_table("connector_group_members")
    op.drop_table("connector_groups")

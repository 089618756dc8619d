"""`provider_ids` as a WITHOUT ROWID table on SQLite.

Its rows are only ever found by their primary key (connector, provider id, message: the
delivery-report lookup) or by message id. A rowid table kept the primary key as a separate
index beside the table itself: three B-trees written per provider id, now two. The group
commit of a batch writes one row per message. PostgreSQL has no rowid: nothing to do.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(*, with_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # Batch mode copies the rows into a new table made with these options, then renames it.
    with op.batch_alter_table(
        "provider_ids", recreate="always", table_kwargs={"sqlite_with_rowid": with_rowid}
    ):
        pass


def upgrade() -> None:
    """Rebuild `provider_ids` WITHOUT ROWID (SQLite only)."""
    _rebuild(with_rowid=False)


def downgrade() -> None:
    """Rebuild `provider_ids` as a rowid table again (SQLite only)."""
    _rebuild(with_rowid=True)

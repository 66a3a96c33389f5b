"""tombstones of sessions deleted with their users (their revocations outlive the rows)

Revision ID: 5b7e9c3d1f2a
Revises: 8d4e2f6a1b3c
Create Date: 2026-11-24 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b7e9c3d1f2a"
down_revision: str | None = "8d4e2f6a1b3c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_session_tombstones",
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_revoked_session_tombstones")),
    )
    with op.batch_alter_table("revoked_session_tombstones", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_revoked_session_tombstones_revoked_at"), ["revoked_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("revoked_session_tombstones", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revoked_session_tombstones_revoked_at"))

    op.drop_table("revoked_session_tombstones")

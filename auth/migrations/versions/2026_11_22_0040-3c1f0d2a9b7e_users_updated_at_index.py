"""index users.updated_at for the change feed every replica polls

Revision ID: 3c1f0d2a9b7e
Revises: 197ad8f426b9
Create Date: 2026-11-22 00:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3c1f0d2a9b7e"
down_revision: str | None = "197ad8f426b9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_updated_at"))

"""security events and lifted lockouts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "security_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("excerpt", sa.String(length=200), nullable=False),
        sa.Column("job_id", sa.String(length=80), nullable=True),
        sa.Column("counts_toward_lockout", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_security_events_at", "security_events", ["at"])
    op.create_index("ix_security_events_user_id_at", "security_events", ["user_id", "at"])
    # A plain ALTER, not a batch rebuild: on SQLite, rebuilding users would drop the old table, and
    # with foreign keys on that deletes every row that cascades from it.
    op.add_column("users", sa.Column("lockout_lifted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # SQLite drops a plain column in place since 3.35.
    op.drop_column("users", "lockout_lifted_at")
    op.drop_index("ix_security_events_user_id_at", table_name="security_events")
    op.drop_index("ix_security_events_at", table_name="security_events")
    op.drop_table("security_events")

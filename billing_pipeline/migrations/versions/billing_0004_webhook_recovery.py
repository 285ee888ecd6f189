"""`billing.webhook_recovery`: how far Stripe's event list is known to be in the inbox.

Revision ID: billing_0004
Revises: billing_0003
Create Date: 2026-12-01 19:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0004"
down_revision: str | Sequence[str] | None = "billing_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_recovery",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("confirmed_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_webhook_recovery")),
        schema="billing",
    )


def downgrade() -> None:
    op.drop_table("webhook_recovery", schema="billing")

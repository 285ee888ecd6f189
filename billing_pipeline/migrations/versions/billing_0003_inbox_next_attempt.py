"""Webhook inbox: `next_attempt_at`, so a failed event is retried when its backoff is over.

Revision ID: billing_0003
Revises: billing_0002
Create Date: 2026-12-01 19:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0003"
down_revision: str | Sequence[str] | None = "billing_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing open rows become due at once, as they were before this column.
    op.add_column(
        "webhook_inbox",
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        schema="billing",
    )


def downgrade() -> None:
    op.drop_column("webhook_inbox", "next_attempt_at", schema="billing")

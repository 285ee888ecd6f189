"""Subscription status history: which status each subscription had from when.

Attribution billed every day still inside Stripe's window by the subscription's current status,
so a trial paused and resumed had its trial days reversed while paused and its paused days billed
after the resume. The webhook flow now keeps every status it learns with the instant it took
effect; attribution reads the status of each part of a day. Subscriptions without history (rows
from before this revision) keep being attributed by their current status.

Revision ID: billing_0010
Revises: billing_0009
Create Date: 2026-12-07 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0010"
down_revision: str | Sequence[str] | None = "billing_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscription_status_history",
        sa.Column("stripe_subscription_id", sa.Text(), nullable=False),
        sa.Column("effective_from", _TIMESTAMP, nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("event_created", _TIMESTAMP, nullable=False),
        sa.Column("recorded_at", _TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint(
            "stripe_subscription_id", "effective_from", name="pk_subscription_status_history"
        ),
        schema="billing",
    )


def downgrade() -> None:
    op.drop_table("subscription_status_history", schema="billing")

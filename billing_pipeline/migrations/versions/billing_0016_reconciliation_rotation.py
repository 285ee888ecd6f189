"""Reconciliation's rotation state: when each (meter, customer) was last compared with Stripe,
and how many summary reads were made per UTC day.

Reconciliation asks Stripe about a bounded number of (meter, customer) pairs a day, least
recently compared first, so every pair is compared within a configured number of days; the
rotation must survive runs, and the daily call budget must hold across every run of the day.

Revision ID: billing_0016
Revises: billing_0015
Create Date: 2026-12-08 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0016"
down_revision: str | Sequence[str] | None = "billing_0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reconciled_pairs",
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("stripe_customer_id", sa.Text(), nullable=False),
        sa.Column("last_compared_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drift", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("meter", "stripe_customer_id", name="pk_reconciled_pairs"),
        schema="billing",
    )
    op.create_index(
        "ix_reconciled_pairs_last_compared_at",
        "reconciled_pairs",
        ["last_compared_at"],
        schema="billing",
    )
    op.create_table(
        "reconciliation_calls",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_reconciliation_calls"),
        schema="billing",
    )


def downgrade() -> None:
    op.drop_table("reconciliation_calls", schema="billing")
    op.drop_index(
        "ix_reconciled_pairs_last_compared_at", table_name="reconciled_pairs", schema="billing"
    )
    op.drop_table("reconciled_pairs", schema="billing")

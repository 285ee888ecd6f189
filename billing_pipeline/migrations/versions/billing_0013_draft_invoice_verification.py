"""Draft invoice verification: when each draft finalizes, each look at it, the lines it lost.

`invoices.automatically_finalizes_at` (from `invoice.created`) tells the draft sensor how much
grace period is left; `draft_verifications` holds one row per look (run) at a draft;
`unfixable_draft_lines` one row per line that still differed from the source at the last look
before finalization (customer, invoice, line, expected and held values), written once.

Revision ID: billing_0013
Revises: billing_0012
Create Date: 2026-12-08 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0013"
down_revision: str | Sequence[str] | None = "billing_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "invoices",
        sa.Column("automatically_finalizes_at", _TIMESTAMP, nullable=True),
        schema="billing",
    )
    op.create_table(
        "draft_verifications",
        sa.Column("invoice_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("lines_compared", sa.Integer(), nullable=False),
        sa.Column("checked_at", _TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "outcome IN ('verified', 'gap', 'unfixable')", name="ck_draft_verifications_outcome"
        ),
        sa.PrimaryKeyConstraint("invoice_id", "attempt", name="pk_draft_verifications"),
        schema="billing",
    )
    op.create_table(
        "unfixable_draft_lines",
        sa.Column("invoice_id", sa.Text(), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("stripe_customer_id", sa.Text(), nullable=False),
        sa.Column("stripe_subscription_id", sa.Text(), nullable=True),
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("period_start", _TIMESTAMP, nullable=False),
        sa.Column("period_end", _TIMESTAMP, nullable=False),
        sa.Column("expected", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("invoice_id", "line", name="pk_unfixable_draft_lines"),
        schema="billing",
    )


def downgrade() -> None:
    op.drop_table("unfixable_draft_lines", schema="billing")
    op.drop_table("draft_verifications", schema="billing")
    op.drop_column("invoices", "automatically_finalizes_at", schema="billing")

"""Billing periods: ledger rows per part of a day, the periods and invoices the webhooks saw.

A day that contains a billing boundary (a period end, a subscription's start or end) is billed
in parts, so the ledger key gains `part_start`; existing rows are whole days and start at the
day's start, which keeps their identifiers. `billing_periods` keeps every period seen, and
`invoices` what each invoice billed.

Revision ID: billing_0006
Revises: billing_0005
Create Date: 2026-12-01 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "billing_0006"
down_revision: str | Sequence[str] | None = "billing_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    for column in ("part_start", "part_end"):
        op.add_column("meter_ledger", sa.Column(column, _TIMESTAMP), schema="billing")
    op.execute(
        "UPDATE billing.meter_ledger SET part_start = CAST(day AS timestamptz), "
        "part_end = CAST(day AS timestamptz) + interval '1 day'"
    )
    for column in ("part_start", "part_end"):
        op.alter_column("meter_ledger", column, nullable=False, schema="billing")
    op.drop_constraint("uq_meter_ledger_revision", "meter_ledger", schema="billing")
    op.create_unique_constraint(
        "uq_meter_ledger_revision",
        "meter_ledger",
        ["meter", "stripe_customer_id", "day", "part_start", "revision"],
        schema="billing",
    )
    op.create_table(
        "billing_periods",
        sa.Column("stripe_subscription_id", sa.Text(), nullable=False),
        sa.Column("period_start", _TIMESTAMP, nullable=False),
        sa.Column("period_end", _TIMESTAMP, nullable=False),
        sa.Column("stripe_customer_id", sa.Text(), nullable=True),
        sa.Column("first_seen_at", _TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint(
            "stripe_subscription_id", "period_start", name="pk_billing_periods"
        ),
        schema="billing",
    )
    op.create_index(
        "ix_billing_periods_period_end", "billing_periods", ["period_end"], schema="billing"
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("stripe_customer_id", sa.Text(), nullable=True),
        sa.Column("stripe_subscription_id", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("billing_reason", sa.Text(), nullable=True),
        sa.Column("lines", postgresql.JSONB(), nullable=False),
        sa.Column("finalized_at", _TIMESTAMP, nullable=True),
        sa.Column("event_created", _TIMESTAMP, nullable=False),
        sa.Column("updated_at", _TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_invoices"),
        schema="billing",
    )


def downgrade() -> None:
    op.drop_table("invoices", schema="billing")
    op.drop_index("ix_billing_periods_period_end", "billing_periods", schema="billing")
    op.drop_table("billing_periods", schema="billing")
    op.drop_constraint("uq_meter_ledger_revision", "meter_ledger", schema="billing")
    op.execute("DELETE FROM billing.meter_ledger WHERE part_start <> CAST(day AS timestamptz)")
    op.create_unique_constraint(
        "uq_meter_ledger_revision",
        "meter_ledger",
        ["meter", "stripe_customer_id", "day", "revision"],
        schema="billing",
    )
    op.drop_column("meter_ledger", "part_end", schema="billing")
    op.drop_column("meter_ledger", "part_start", schema="billing")

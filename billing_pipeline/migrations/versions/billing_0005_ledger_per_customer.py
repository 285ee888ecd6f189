"""The ledger per (meter, Stripe customer, day, revision), with in-doubt and settled statuses.

Stripe bills customers, not organizations, so a ledger row is now one revision of a customer's
day and lists the organizations whose usage it sums (`organization_ids`). Existing rows keep
their identifiers (Stripe may still remember them) and are renumbered per customer and day in
their old order. `skipped` rows (no customer) are dropped: unbilled usage is now derived from
the attribution on every run, so a backdated subscription bills those days.

Revision ID: billing_0005
Revises: billing_0004
Create Date: 2026-12-01 19:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "billing_0005"
down_revision: str | Sequence[str] | None = "billing_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_STATUSES = (
    "status IN ('pending', 'sent', 'failed', 'expired', 'rejected', 'in_doubt', 'absent', "
    "'superseded')"
)
OLD_STATUSES = "status IN ('pending', 'sent', 'skipped', 'failed', 'expired', 'rejected')"


def upgrade() -> None:
    op.execute("DELETE FROM billing.meter_ledger WHERE stripe_customer_id IS NULL")
    op.add_column(
        "meter_ledger",
        sa.Column("organization_ids", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        schema="billing",
    )
    op.add_column(
        "meter_ledger", sa.Column("aggregation_window", sa.Text(), nullable=True), schema="billing"
    )
    op.add_column(
        "meter_ledger",
        sa.Column("first_attempted_at", sa.DateTime(timezone=True), nullable=True),
        schema="billing",
    )
    op.drop_constraint("uq_meter_ledger_revision", "meter_ledger", schema="billing")
    op.execute(
        """
        UPDATE billing.meter_ledger l
        SET organization_ids = ARRAY[l.organization_id], revision = n.revision,
            first_attempted_at = CASE WHEN l.attempts > 0 THEN l.updated_at END
        FROM (
            SELECT identifier, row_number() OVER (
                PARTITION BY meter, stripe_customer_id, day
                ORDER BY revision, organization_id) AS revision
            FROM billing.meter_ledger
        ) n
        WHERE n.identifier = l.identifier
        """
    )
    op.alter_column("meter_ledger", "organization_ids", nullable=False, schema="billing")
    op.alter_column("meter_ledger", "stripe_customer_id", nullable=False, schema="billing")
    op.drop_column("meter_ledger", "organization_id", schema="billing")
    op.create_unique_constraint(
        "uq_meter_ledger_revision",
        "meter_ledger",
        ["meter", "stripe_customer_id", "day", "revision"],
        schema="billing",
    )
    op.drop_constraint("ck_meter_ledger_status", "meter_ledger", schema="billing")
    op.create_check_constraint(
        "ck_meter_ledger_status", "meter_ledger", NEW_STATUSES, schema="billing"
    )


def downgrade() -> None:
    # Settled and superseded rows have no old equivalent that keeps them unsendable: `expired`
    # does. In-doubt rows become `failed` only if never attempted, which they always were, so
    # they become `expired` too: resending them could bill twice.
    op.execute(
        "UPDATE billing.meter_ledger SET status = 'expired', "
        "status_reason = status || ' (downgraded): ' || coalesce(status_reason, '') "
        "WHERE status IN ('in_doubt', 'absent', 'superseded')"
    )
    op.drop_constraint("ck_meter_ledger_status", "meter_ledger", schema="billing")
    op.create_check_constraint(
        "ck_meter_ledger_status", "meter_ledger", OLD_STATUSES, schema="billing"
    )
    op.drop_constraint("uq_meter_ledger_revision", "meter_ledger", schema="billing")
    op.add_column(
        "meter_ledger",
        sa.Column("organization_id", sa.BigInteger(), nullable=True),
        schema="billing",
    )
    op.execute("UPDATE billing.meter_ledger SET organization_id = organization_ids[1]")
    op.alter_column("meter_ledger", "organization_id", nullable=False, schema="billing")
    op.alter_column("meter_ledger", "stripe_customer_id", nullable=True, schema="billing")
    op.drop_column("meter_ledger", "first_attempted_at", schema="billing")
    op.drop_column("meter_ledger", "aggregation_window", schema="billing")
    op.drop_column("meter_ledger", "organization_ids", schema="billing")
    op.create_unique_constraint(
        "uq_meter_ledger_revision",
        "meter_ledger",
        ["meter", "organization_id", "day", "revision"],
        schema="billing",
    )

"""Ledger statuses for downward corrections of raw `sum` meters made without negative values.

`cancelling` and `cancelled` (a sent event cancelled with a meter event adjustment), and
`uncorrectable` (a downward correction Stripe can no longer cancel, recorded and never sent);
a partial index finds the customers whose meter waits for a cancel.

Revision ID: billing_0012
Revises: billing_0011
Create Date: 2026-12-07 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0012"
down_revision: str | Sequence[str] | None = "billing_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = (
    "'pending', 'sent', 'failed', 'expired', 'rejected', 'in_doubt', 'absent', 'superseded'"
)
NEW_STATUSES = f"{OLD_STATUSES}, 'cancelling', 'cancelled', 'uncorrectable'"


def upgrade() -> None:
    op.drop_constraint("ck_meter_ledger_status", "meter_ledger", schema="billing")
    op.create_check_constraint(
        "ck_meter_ledger_status", "meter_ledger", f"status IN ({NEW_STATUSES})", schema="billing"
    )
    op.create_index(
        "ix_meter_ledger_cancelling",
        "meter_ledger",
        ["stripe_customer_id", "meter"],
        schema="billing",
        postgresql_where=sa.text("status = 'cancelling'"),
    )


def downgrade() -> None:
    # A cancel not yet confirmed is still held by Stripe: back to `sent`. Cancelled rows and
    # uncorrectable ones are not in Stripe: kept visible as `absent` (never resent, not counted).
    op.execute("UPDATE billing.meter_ledger SET status = 'sent' WHERE status = 'cancelling'")
    op.execute(
        "UPDATE billing.meter_ledger SET status = 'absent', "
        "status_reason = status || ' (downgraded): ' || coalesce(status_reason, '') "
        "WHERE status IN ('cancelled', 'uncorrectable')"
    )
    op.drop_index("ix_meter_ledger_cancelling", table_name="meter_ledger", schema="billing")
    op.drop_constraint("ck_meter_ledger_status", "meter_ledger", schema="billing")
    op.create_check_constraint(
        "ck_meter_ledger_status", "meter_ledger", f"status IN ({OLD_STATUSES})", schema="billing"
    )

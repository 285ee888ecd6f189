"""Ledger status `rejected`: Stripe accepted the call but reported the event invalid later.

Revision ID: billing_0002
Revises: billing_0001
Create Date: 2026-11-21 20:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "billing_0002"
down_revision: str | Sequence[str] | None = "billing_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_REJECTED = "status IN ('pending', 'sent', 'skipped', 'failed', 'expired', 'rejected')"
WITHOUT_REJECTED = "status IN ('pending', 'sent', 'skipped', 'failed', 'expired')"


def upgrade() -> None:
    op.drop_constraint("ck_meter_ledger_status", "meter_ledger", schema="billing")
    op.create_check_constraint(
        "ck_meter_ledger_status", "meter_ledger", WITH_REJECTED, schema="billing"
    )


def downgrade() -> None:
    # A rejected row's identifier is spent at Stripe; as `failed` it would be resent and then
    # counted as delivered, so the downgrade keeps it visible but never sendable.
    op.execute(
        "UPDATE billing.meter_ledger SET status = 'expired', "
        "status_reason = 'rejected by Stripe (downgraded): ' || coalesce(status_reason, '') "
        "WHERE status = 'rejected'"
    )
    op.drop_constraint("ck_meter_ledger_status", "meter_ledger", schema="billing")
    op.create_check_constraint(
        "ck_meter_ledger_status", "meter_ledger", WITHOUT_REJECTED, schema="billing"
    )

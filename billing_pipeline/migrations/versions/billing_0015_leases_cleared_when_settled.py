"""A ledger row that leaves the unsent statuses loses its lease, whatever statement moved it.

Leases only mean something on rows a sender may still send (`pending`, `failed`). Statements
other than the sender's own outcome writes also settle rows (planning supersedes them, meter
error reports reject them, settling marks them in doubt, cancels drop them); each used to keep
the lease it found, so a lease outlived the run that took it and was never cleared. One trigger
keeps the rule for every statement, present and future; rows already left leased are freed.

Revision ID: billing_0015
Revises: billing_0014
Create Date: 2026-12-08 01:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "billing_0015"
down_revision: str | Sequence[str] | None = "billing_0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The unsent statuses (`UNSENT_STATUSES` in billing_pipeline/db/statuses.py), frozen here as
# a migration must be.
UNSENT = "'pending', 'failed'"


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION billing.meter_ledger_clear_lease() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.lease_owner := NULL;
            NEW.lease_expires_at := NULL;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        f"""
        CREATE TRIGGER meter_ledger_clear_lease
        BEFORE UPDATE ON billing.meter_ledger
        FOR EACH ROW
        WHEN (NEW.lease_owner IS NOT NULL AND NEW.status NOT IN ({UNSENT}))
        EXECUTE FUNCTION billing.meter_ledger_clear_lease()
        """
    )
    op.execute(
        "UPDATE billing.meter_ledger SET lease_owner = NULL, lease_expires_at = NULL "
        f"WHERE lease_owner IS NOT NULL AND status NOT IN ({UNSENT})"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER meter_ledger_clear_lease ON billing.meter_ledger")
    op.execute("DROP FUNCTION billing.meter_ledger_clear_lease()")

"""A partial index on the ledger rows that need a person, for the ledger checks.

The ledger keeps every revision ever planned (100,000 organizations x 2 meters add 200,000
rows a day, 7 million over Stripe's window and more beyond it), and the checks that list
failed, rejected, in-doubt, stale pending and expired rows ran after every billing run as
sequential scans of all of it, three statements each. The rows they look for are few: an index
holding only them keeps each check proportional to what it finds.

Revision ID: billing_0017
Revises: billing_0016
Create Date: 2026-12-08 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0017"
down_revision: str | Sequence[str] | None = "billing_0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ATTENTION = (
    "status IN ('pending', 'failed', 'rejected', 'in_doubt', 'expired', 'cancelling', "
    "'uncorrectable')"
)


def upgrade() -> None:
    op.create_index(
        "ix_meter_ledger_attention",
        "meter_ledger",
        ["status", "updated_at"],
        schema="billing",
        postgresql_where=sa.text(ATTENTION),
    )


def downgrade() -> None:
    op.drop_index("ix_meter_ledger_attention", "meter_ledger", schema="billing")

"""Ledger leases: a sender claims rows for a while instead of locking them across each call.

Revision ID: billing_0007
Revises: billing_0006
Create Date: 2026-12-01 23:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0007"
down_revision: str | Sequence[str] | None = "billing_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("meter_ledger", sa.Column("lease_owner", sa.Text()), schema="billing")
    op.add_column(
        "meter_ledger",
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        schema="billing",
    )


def downgrade() -> None:
    op.drop_column("meter_ledger", "lease_expires_at", schema="billing")
    op.drop_column("meter_ledger", "lease_owner", schema="billing")

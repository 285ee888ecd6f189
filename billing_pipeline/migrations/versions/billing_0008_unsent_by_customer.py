"""Unsent ledger rows indexed in the order they are sent, so senders read them chunk by chunk.

Revision ID: billing_0008
Revises: billing_0007
Create Date: 2026-12-02 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0008"
down_revision: str | Sequence[str] | None = "billing_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNSENT = sa.text("status IN ('pending', 'failed')")


def upgrade() -> None:
    op.drop_index("ix_meter_ledger_unsent", table_name="meter_ledger", schema="billing")
    op.create_index(
        "ix_meter_ledger_unsent",
        "meter_ledger",
        ["stripe_customer_id", "part_start", "revision"],
        schema="billing",
        postgresql_where=UNSENT,
    )


def downgrade() -> None:
    op.drop_index("ix_meter_ledger_unsent", table_name="meter_ledger", schema="billing")
    op.create_index(
        "ix_meter_ledger_unsent",
        "meter_ledger",
        ["status"],
        schema="billing",
        postgresql_where=UNSENT,
    )

"""Ledger pages half free, so a sender's claim is a heap-only update (no index entries).

The claim sets only the lease columns, none of them indexed; with room on the row's page
PostgreSQL writes the new version there and adds no index entries. The setting applies to pages
filled from now on; existing rows stay where they are.

Revision ID: billing_0009
Revises: billing_0008
Create Date: 2026-12-02 06:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "billing_0009"
down_revision: str | Sequence[str] | None = "billing_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE billing.meter_ledger SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE billing.meter_ledger RESET (fillfactor)")

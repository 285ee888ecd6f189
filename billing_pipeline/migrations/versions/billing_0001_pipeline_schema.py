"""The pipeline's own schema: daily usage, the meter-event ledger, the webhook inbox.

Revision ID: billing_0001
Revises:
Create Date: 2026-11-21 19:08:12.705713
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "billing_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("billing",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "daily_usage",
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("meter", "day", "organization_id", name=op.f("pk_daily_usage")),
        schema="billing",
    )
    op.create_table(
        "meter_ledger",
        sa.Column("identifier", sa.Text(), nullable=False),
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("event_name", sa.Text(), nullable=False),
        sa.Column("stripe_customer_id", sa.Text(), nullable=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("target_value", sa.BigInteger(), nullable=False),
        sa.Column("event_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'skipped', 'failed', 'expired')",
            name=op.f("ck_meter_ledger_status"),
        ),
        sa.CheckConstraint(
            "length(identifier) <= 100", name=op.f("ck_meter_ledger_identifier_length")
        ),
        sa.PrimaryKeyConstraint("identifier", name=op.f("pk_meter_ledger")),
        sa.UniqueConstraint(
            "meter", "organization_id", "day", "revision", name="uq_meter_ledger_revision"
        ),
        schema="billing",
    )
    op.create_index(
        "ix_meter_ledger_day_meter",
        "meter_ledger",
        ["day", "meter"],
        unique=False,
        schema="billing",
    )
    op.create_index(
        "ix_meter_ledger_unsent",
        "meter_ledger",
        ["status"],
        unique=False,
        schema="billing",
        postgresql_where=sa.text("status IN ('pending', 'failed')"),
    )
    op.create_table(
        "webhook_inbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("stripe_created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("api_version", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processed', 'ignored', 'failed', 'dead_letter')",
            name=op.f("ck_webhook_inbox_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_inbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_webhook_inbox_event_id")),
        schema="billing",
    )
    op.create_index(
        "ix_webhook_inbox_open",
        "webhook_inbox",
        ["stripe_created"],
        unique=False,
        schema="billing",
        postgresql_where=sa.text("status IN ('pending', 'failed')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_inbox_open",
        table_name="webhook_inbox",
        schema="billing",
        postgresql_where=sa.text("status IN ('pending', 'failed')"),
    )
    op.drop_table("webhook_inbox", schema="billing")
    op.drop_index(
        "ix_meter_ledger_unsent",
        table_name="meter_ledger",
        schema="billing",
        postgresql_where=sa.text("status IN ('pending', 'failed')"),
    )
    op.drop_index("ix_meter_ledger_day_meter", table_name="meter_ledger", schema="billing")
    op.drop_table("meter_ledger", schema="billing")
    op.drop_table("daily_usage", schema="billing")

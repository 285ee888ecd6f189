"""Which Stripe meter each subscription prices, and which Stripe meter each declared meter is.

Stripe meters aggregate per customer, so two subscriptions of one customer with prices on the
same meter each bill the customer's whole usage. To refuse reporting such usage (and say so),
attribution must know each subscription's metered prices (from `customer.subscription.*`:
`items.data[].price.recurring.meter`) and the Stripe meter id of each declared meter (recorded
by every reporting run when it verifies the meters).

Revision ID: billing_0011
Revises: billing_0010
Create Date: 2026-12-07 22:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "billing_0011"
down_revision: str | Sequence[str] | None = "billing_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscription_prices",
        sa.Column("stripe_subscription_id", sa.Text(), nullable=False),
        sa.Column("stripe_price_id", sa.Text(), nullable=False),
        sa.Column("stripe_meter_id", sa.Text(), nullable=True),
        sa.Column("unit_amount_decimal", sa.Numeric(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("event_created", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint(
            "stripe_subscription_id", "stripe_price_id", name="pk_subscription_prices"
        ),
        schema="billing",
    )
    op.create_table(
        "stripe_meters",
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("stripe_meter_id", sa.Text(), nullable=False),
        sa.Column("event_name", sa.Text(), nullable=False),
        sa.Column("recorded_at", _TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("meter", name="pk_stripe_meters"),
        schema="billing",
    )


def downgrade() -> None:
    op.drop_table("stripe_meters", schema="billing")
    op.drop_table("subscription_prices", schema="billing")

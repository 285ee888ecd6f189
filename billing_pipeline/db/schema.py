"""Table definitions: the application's reference schema and the pipeline's own `billing` schema.

The application tables (public schema) are the ones the pipeline reads. Real deployments already
have them; the definitions here serve the demo and the tests and document what the SQL expects.
The pipeline's state lives in the separate `billing` schema so that pointing it at an existing
application database never alters the application's tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from billing_pipeline.db.statuses import (
    OPEN_INBOX_STATUSES,
    AlertDeliveryStatus,
    DraftOutcome,
    InboxStatus,
    LedgerStatus,
)

BILLING_SCHEMA = "billing"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

app_metadata = MetaData(naming_convention=NAMING_CONVENTION)
billing_metadata = MetaData(schema=BILLING_SCHEMA, naming_convention=NAMING_CONVENTION)


def _timestamp(
    name: str, *, nullable: bool = True, default_now: bool = False, primary_key: bool = False
) -> Column[object]:
    return Column(
        name,
        DateTime(timezone=True),
        nullable=nullable,
        primary_key=primary_key,
        server_default=func.now() if default_now else None,
    )


# --- application tables (reference schema) ---------------------------------------------------

organizations = Table(
    "organizations",
    app_metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False),
    _timestamp("created_at", nullable=False, default_now=True),
)

SUBSCRIPTION_STATUSES = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
)

subscriptions = Table(
    "subscriptions",
    app_metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("organization_id", BigInteger, ForeignKey("organizations.id"), nullable=False),
    Column("stripe_customer_id", Text, nullable=True),
    Column("stripe_subscription_id", Text, nullable=True, unique=True),
    Column("status", Text, nullable=False, server_default="incomplete"),
    _timestamp("started_at"),
    _timestamp("current_period_start"),
    _timestamp("current_period_end"),
    Column("cancel_at_period_end", Boolean, nullable=False, server_default=text("false")),
    _timestamp("cancel_at"),
    _timestamp("canceled_at"),
    _timestamp("ended_at"),
    Column("latest_invoice_id", Text, nullable=True),
    Column("payment_status", Text, nullable=True),
    # Stripe delivers webhooks out of order; these remember the `created` of the newest event
    # applied to each part of the row so an older event never overwrites newer state.
    _timestamp("state_event_created"),
    _timestamp("payment_event_created"),
    _timestamp("created_at", nullable=False, default_now=True),
    _timestamp("updated_at", nullable=False, default_now=True),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in SUBSCRIPTION_STATUSES) + ")", name="status"
    ),
    CheckConstraint("payment_status IN ('paid', 'payment_failed')", name="payment_status"),
    Index("ix_subscriptions_organization_id", "organization_id"),
    Index("ix_subscriptions_stripe_customer_id", "stripe_customer_id"),
)

sensors = Table(
    "sensors",
    app_metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("organization_id", BigInteger, ForeignKey("organizations.id"), nullable=False),
    Column("serial_number", Text, nullable=False, unique=True),
    # A day's active-sensor count is computed from this history, never from a current flag.
    _timestamp("created_at", nullable=False),
    _timestamp("deactivated_at"),
    CheckConstraint("deactivated_at IS NULL OR deactivated_at >= created_at", name="lifetime"),
    Index("ix_sensors_organization_id_created_at", "organization_id", "created_at"),
)

temperature_readings = Table(
    "temperature_readings",
    app_metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("sensor_id", BigInteger, ForeignKey("sensors.id"), nullable=False),
    _timestamp("recorded_at", nullable=False),
    Column("celsius", Float, nullable=False),
    # When the row reached the database: a reading ingested after its day was reported is late.
    _timestamp("ingested_at", nullable=False, default_now=True),
    # One UTC day's count per sensor is an index-only range scan.
    Index(
        "ix_temperature_readings_recorded_at",
        "recorded_at",
        postgresql_include=["sensor_id"],
    ),
    Index("ix_temperature_readings_ingested_at", "ingested_at"),
)

# --- pipeline tables (billing schema) ---------------------------------------------------------

daily_usage = Table(
    "daily_usage",
    billing_metadata,
    Column("meter", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("organization_id", BigInteger, primary_key=True),
    Column("value", BigInteger, nullable=False),
    _timestamp("computed_at", nullable=False, default_now=True),
)

LEDGER_STATUSES = tuple(LedgerStatus)

LEDGER_FILLFACTOR = 50

meter_ledger = Table(
    "meter_ledger",
    billing_metadata,
    # Deterministic: derived from meter, customer, day, revision and the value it carries, so
    # Stripe's "duplicate" answer means Stripe holds this very value. Written before the call.
    Column("identifier", Text, primary_key=True),
    Column("meter", Text, nullable=False),
    Column("stripe_customer_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    # Where the row's part of the day starts: the day's start, or a billing boundary inside it
    # (a period end, a subscription's start or end), so each period's usage is stamped inside it.
    _timestamp("part_start", nullable=False),
    _timestamp("part_end", nullable=False),
    Column("revision", Integer, nullable=False),
    Column("event_name", Text, nullable=False),
    # The organizations whose usage the row sums (the customer's organizations on that day).
    Column("organization_ids", ARRAY(BigInteger), nullable=False),
    # The Stripe meter's `event_time_window` when planned: NULL for raw meters (the value is a
    # difference for `sum`), 'day' for pre-aggregated ones (the value is the whole day's).
    Column("aggregation_window", Text, nullable=True),
    # What this event sends...
    Column("value", BigInteger, nullable=False),
    # ...and the day's aggregate for the customer that Stripe holds once it is applied.
    Column("target_value", BigInteger, nullable=False),
    _timestamp("event_timestamp", nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("status_reason", Text, nullable=True),
    Column("error_code", Text, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # Committed before the first call: once Stripe's 24 h dedupe has passed, a row attempted
    # but never confirmed is in doubt rather than resent.
    _timestamp("first_attempted_at"),
    # A sender claims rows by lease instead of holding a row lock across its Stripe calls: a
    # crashed sender's leases expire and the same identifiers go out again. A row leaving the
    # unsent statuses loses its lease, by trigger (migration billing_0015).
    Column("lease_owner", Text, nullable=True),
    _timestamp("lease_expires_at"),
    _timestamp("created_at", nullable=False, default_now=True),
    _timestamp("updated_at", nullable=False, default_now=True),
    _timestamp("sent_at"),
    CheckConstraint("length(identifier) <= 100", name="identifier_length"),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in LEDGER_STATUSES) + ")", name="status"
    ),
    UniqueConstraint(
        "meter",
        "stripe_customer_id",
        "day",
        "part_start",
        "revision",
        name="uq_meter_ledger_revision",
    ),
    Index("ix_meter_ledger_day_meter", "day", "meter"),
    # What senders read, in the order they send it, one chunk of customers at a time.
    Index(
        "ix_meter_ledger_unsent",
        "stripe_customer_id",
        "part_start",
        "revision",
        postgresql_where=text("status IN ('pending', 'failed')"),
    ),
    # A customer's meter sends nothing while one of its events awaits its cancel
    # (`cancels.py`): what the senders look up for every unsent row.
    Index(
        "ix_meter_ledger_cancelling",
        "stripe_customer_id",
        "meter",
        postgresql_where=text("status = 'cancelling'"),
    ),
    # The rows the ledger checks list (checks.py): few, in a ledger of millions (billing_0017).
    Index(
        "ix_meter_ledger_attention",
        "status",
        "updated_at",
        postgresql_where=text(
            "status IN ('pending', 'failed', 'rejected', 'in_doubt', 'expired', 'cancelling', "
            "'uncorrectable')"
        ),
    ),
    # Half of each page left free when rows are planned, so a sender's claim (lease columns
    # only, none indexed) is a heap-only update on the same page with no index entries:
    # measured 3x cheaper claims and ~10% more events/s end to end (bench/RESULTS.md).
    postgresql_with={"fillfactor": LEDGER_FILLFACTOR},
)

billing_periods = Table(
    "billing_periods",
    billing_metadata,
    # Every billing period the webhook flow has seen, kept after the subscription moves on: the
    # boundaries of days still inside Stripe's window must stay known to split those days.
    Column("stripe_subscription_id", Text, primary_key=True),
    _timestamp("period_start", nullable=False, primary_key=True),
    _timestamp("period_end", nullable=False),
    Column("stripe_customer_id", Text, nullable=True),
    _timestamp("first_seen_at", nullable=False, default_now=True),
    Index("ix_billing_periods_period_end", "period_end"),
)

subscription_status_history = Table(
    "subscription_status_history",
    billing_metadata,
    # Every status the webhook flow learned, from the instant it took effect (Stripe's own
    # timestamps where it gives them, else the event's `created`): attribution bills each part
    # of a day by the status its subscription had then, not by today's.
    Column("stripe_subscription_id", Text, primary_key=True),
    _timestamp("effective_from", nullable=False, primary_key=True),
    Column("status", Text, nullable=False),
    # The newest event that wrote this point: an older one never overwrites it.
    _timestamp("event_created", nullable=False),
    _timestamp("recorded_at", nullable=False, default_now=True),
)

subscription_prices = Table(
    "subscription_prices",
    billing_metadata,
    # The prices of each subscription's items as its newest event lists them, with the Stripe
    # meter a metered price bills: two subscriptions of one customer pricing one meter would each
    # bill the customer's whole usage, which attribution refuses to report.
    Column("stripe_subscription_id", Text, primary_key=True),
    Column("stripe_price_id", Text, primary_key=True),
    Column("stripe_meter_id", Text, nullable=True),
    Column("unit_amount_decimal", Numeric, nullable=True),  # minor units, as Stripe gives it
    Column("currency", Text, nullable=True),
    _timestamp("event_created", nullable=False),
)

stripe_meters = Table(
    "stripe_meters",
    billing_metadata,
    # The Stripe meter each declared meter reports to, as the last reporting run verified it.
    Column("meter", Text, primary_key=True),
    Column("stripe_meter_id", Text, nullable=False),
    Column("event_name", Text, nullable=False),
    _timestamp("recorded_at", nullable=False, default_now=True),
)

reconciled_pairs = Table(
    "reconciled_pairs",
    billing_metadata,
    # When reconciliation last compared each (meter, Stripe customer) with Stripe and found it
    # settled: the rotation takes the least recently compared first, across runs.
    Column("meter", Text, primary_key=True),
    Column("stripe_customer_id", Text, primary_key=True),
    _timestamp("last_compared_at", nullable=False),
    # Whether that comparison found a drift: such a pair is asked about again on every run.
    Column("drift", Boolean, nullable=False, server_default=text("false")),
    Index("ix_reconciled_pairs_last_compared_at", "last_compared_at"),
)

reconciliation_calls = Table(
    "reconciliation_calls",
    billing_metadata,
    # Stripe summary reads reconciliation made per UTC day, over all its runs: the daily budget
    # holds however many times the job is launched.
    Column("day", Date, primary_key=True),
    Column("calls", Integer, nullable=False),
)

invoices = Table(
    "invoices",
    billing_metadata,
    # Stripe's invoices as the webhook flow last saw them: which usage each finalized invoice
    # billed, so usage that reached Stripe too late is found and shown.
    Column("id", Text, primary_key=True),
    Column("stripe_customer_id", Text, nullable=True),
    Column("stripe_subscription_id", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("billing_reason", Text, nullable=True),
    # One entry per line: {"price": id, "quantity": n, "start": unix, "end": unix}.
    Column("lines", JSONB, nullable=False),
    _timestamp("finalized_at"),
    _timestamp("event_created", nullable=False),
    _timestamp("updated_at", nullable=False, default_now=True),
    # When Stripe finalizes the draft (`invoice.created`): the end of its grace period.
    _timestamp("automatically_finalizes_at"),
)

draft_verifications = Table(
    "draft_verifications",
    billing_metadata,
    # One row per look (run) at a draft invoice: what the draft sensor decides the next look on.
    Column("invoice_id", Text, primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("outcome", Text, nullable=False),
    Column("lines_compared", Integer, nullable=False),
    _timestamp("checked_at", nullable=False),
    CheckConstraint(
        "outcome IN (" + ", ".join(f"'{s}'" for s in DraftOutcome) + ")", name="outcome"
    ),
)

unfixable_draft_lines = Table(
    "unfixable_draft_lines",
    billing_metadata,
    # A draft's metered line that still differed from the source at the last look before
    # Stripe finalized it: written once, named by the `draft_invoices_verified` check.
    Column("invoice_id", Text, primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("stripe_customer_id", Text, nullable=False),
    Column("stripe_subscription_id", Text, nullable=True),
    Column("meter", Text, nullable=False),
    _timestamp("period_start", nullable=False),
    _timestamp("period_end", nullable=False),
    Column("expected", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False),
    _timestamp("recorded_at", nullable=False),
)

INBOX_STATUSES = tuple(InboxStatus)

webhook_inbox = Table(
    "webhook_inbox",
    billing_metadata,
    # Insertion order for the sensor's cursor; the Stripe id is the deduplication key.
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("event_type", Text, nullable=False),
    _timestamp("stripe_created", nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("api_version", Text, nullable=True),
    Column("payload", JSONB, nullable=False),
    _timestamp("received_at", nullable=False, default_now=True),
    Column("status", Text, nullable=False, server_default=InboxStatus.PENDING.value),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    _timestamp("processed_at"),
    # When a failed event may be tried again (exponential backoff); new rows are due at once.
    _timestamp("next_attempt_at", nullable=False, default_now=True),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in INBOX_STATUSES) + ")", name="status"
    ),
    Index(
        "ix_webhook_inbox_open",
        "stripe_created",
        postgresql_where=text(
            "status IN (" + ", ".join(f"'{s}'" for s in OPEN_INBOX_STATUSES) + ")"
        ),
    ),
)

webhook_recovery = Table(
    "webhook_recovery",
    billing_metadata,
    # One row per list of events the inbox is completed from; today `stripe_v1_events`.
    Column("source", Text, primary_key=True),
    # The `created` of the newest event listed and stored: everything older is in the inbox
    # (the next recovery lists again from a margin before it).
    _timestamp("confirmed_until", nullable=False),
    _timestamp("updated_at", nullable=False, default_now=True),
)

ALERT_DELIVERY_STATUSES = tuple(AlertDeliveryStatus)

alert_deliveries = Table(
    "alert_deliveries",
    billing_metadata,
    # One row per alert and sink. The key names the failure deterministically (a run id, an
    # asset check evaluation's event id), so a sensor tick that runs again after a crash finds
    # the row and never sends the same alert twice.
    Column("alert_key", Text, primary_key=True),
    Column("sink", Text, primary_key=True),
    # What the message says (alerts/messages.py `Alert`), kept to retry it and as a record.
    Column("alert", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default=AlertDeliveryStatus.PENDING.value),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    # When the next attempt may start: now for a new row, later after a failed attempt, and a
    # lease while an attempt is under way (a sensor that died mid-send leaves it to expire).
    _timestamp("next_attempt_at", nullable=False, default_now=True),
    _timestamp("created_at", nullable=False, default_now=True),
    _timestamp("sent_at"),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in ALERT_DELIVERY_STATUSES) + ")", name="status"
    ),
    Index(
        "ix_alert_deliveries_due",
        "next_attempt_at",
        postgresql_where=text(f"status = '{AlertDeliveryStatus.PENDING.value}'"),
    ),
)

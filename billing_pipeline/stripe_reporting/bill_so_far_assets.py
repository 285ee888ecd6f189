"""`billing/bill_so_far`: each customer's bill so far in the Dagster UI, refreshed with the status.

An unpartitioned asset whose latest materialization answers "what will each customer pay this
period?": one table row per subscription and meter (source, ledger, Stripe's preview, expected
and previewed amounts), and per meter the totals as numbers Dagster plots over time. It is
refreshed by `billing_status_schedule` with `billing/status`, so its Stripe calls are bounded by
`max_previews` per run (see `bill_so_far.py`).
"""

from typing import Any

import dagster as dg

from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_reporting.assets import REPORTING_KEY
from billing_pipeline.stripe_reporting.bill_so_far import (
    DEFAULT_MAX_PREVIEWS,
    HEADER,
    NUMERIC,
    BillLine,
    bill_so_far,
    totals,
)
from billing_pipeline.usage.meters import METERS

BILL_SO_FAR_KEY = dg.AssetKey(["billing", "bill_so_far"])
# How many subscriptions the metadata names as not previewed; the count is always complete.
LISTED = 20


class BillSoFarConfig(dg.Config):
    customer: str | None = None  # only this Stripe customer's subscriptions
    max_previews: int = DEFAULT_MAX_PREVIEWS  # Stripe preview calls per run, one a subscription


_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(name.replace(" ", "_"), "int" if name in NUMERIC[:4] else "string")
        for name in HEADER
    ]
)


def _record(line: BillLine) -> dg.TableRecord:
    return dg.TableRecord(
        {
            name.replace(" ", "_"): value
            if isinstance(value, int | str) or value is None
            # datetimes as ISO text; None stays empty
            else str(value)
            for name, value in zip(HEADER, line.cells(), strict=True)
        }
    )


@dg.asset(
    key=BILL_SO_FAR_KEY,
    group_name="billing_status",
    deps=[REPORTING_KEY],
    kinds={"postgres", "stripe"},
    description=(
        "Each subscription's current billing period so far, per meter: the quantity in the "
        "source, in the ledger (and its rows not delivered yet) and in Stripe's invoice preview, "
        "with the expected amount from the price. One Stripe preview per subscription, at most "
        "max_previews a run."
    ),
)
def bill_so_far_asset(
    config: BillSoFarConfig, postgres: PostgresResource, stripe: StripeResource
) -> dg.MaterializeResult:
    result = bill_so_far(
        postgres.engine(),
        METERS,
        stripe.client(),
        customer=config.customer,
        max_previews=config.max_previews,
    )
    metadata: dict[str, Any] = {
        "at": result.now.isoformat(),
        "bill_so_far": dg.MetadataValue.table(
            [_record(line) for line in result.lines], schema=_SCHEMA
        ),
        "subscriptions": len({line.subscription for line in result.lines}),
        "stripe_previews": result.previewed,
        "not_previewed": len(result.not_previewed),
        "not_previewed_subscriptions": ", ".join(result.not_previewed[:LISTED])
        + (" …" if len(result.not_previewed) > LISTED else ""),
        "differences": sum(1 for line in result.lines if line.differences()),
    }
    for total in totals(result):
        # Quantities are in each meter's own unit, so they are plotted per meter.
        metadata[f"source/{total.meter}"] = total.source
        metadata[f"ledger/{total.meter}"] = total.ledger
        metadata[f"stripe_preview/{total.meter}"] = total.stripe
        metadata[f"undelivered_rows/{total.meter}"] = total.undelivered_rows
        metadata[f"expected_cents/{total.meter}"] = total.expected_amount
        metadata[f"stripe_cents/{total.meter}"] = total.stripe_amount
    return dg.MaterializeResult(metadata=metadata)

"""Both kinds of Stripe meter the pipeline reports to, as a parametrized fixture.

`raw`: meters created without `event_time_window` (every event counts), as older accounts have.
`pre_aggregated`: meters created as `billing-pipeline stripe sync-meters` does
(`event_time_window=day`: per customer and UTC day only the newest event counts). Those tests are
skipped while the emulator does not implement the window yet (probed, not assumed).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.usage.meters import METERS
from billing_pipeline_tests.support.builders import midnight
from billing_pipeline_tests.support.stripe import TEST_KEY
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

KINDS = {"raw": None, "pre_aggregated": "day"}


def _emulator_keeps_newest_per_window(billing: StripeBilling) -> bool:
    client = billing.client
    meter = client.v1.billing.meters.create(
        {
            "display_name": "probe",
            "event_name": "probe_window",
            "default_aggregation": {"formula": "sum"},
            "event_time_window": "day",
        }
    )
    customer = client.v1.customers.create({"name": "probe"}).id
    day = datetime.now(UTC).date() - timedelta(days=2)
    for second, value in ((10, 5), (20, 7)):
        client.v1.billing.meter_events.create(
            {
                "event_name": "probe_window",
                "timestamp": int(midnight(day).timestamp()) + second,
                "payload": {"stripe_customer_id": customer, "value": str(value)},
            }
        )
    return day_totals(billing, meter.id, customer, day, day + timedelta(days=1)).get(day) == 7


def day_totals(
    billing: StripeBilling, meter_id: str, customer: str, first: date, end: date
) -> dict[date, float]:
    """Stripe's own view of one customer: the summary value of each UTC day that has one."""
    return {
        day: value
        for day, value in billing.daily_totals(
            meter_id, customer, midnight(first), midnight(end)
        ).items()
        if value
    }


@pytest.fixture(params=list(KINDS))
def meter_kind(
    request: pytest.FixtureRequest, stripe_emulator: StripeEmulator, emulator: EmulatorControl
) -> str:
    """The declared meters, created in the emulator as `raw` or `pre_aggregated` meters."""
    billing = StripeBilling(TEST_KEY, stripe_emulator.url)
    kind: str = request.param
    if kind == "pre_aggregated":
        supported = _emulator_keeps_newest_per_window(billing)
        if not supported:
            pytest.skip("the emulator does not implement event_time_window yet")
    emulator.reset()
    for meter in METERS:
        billing.create_meter(meter, event_time_window=KINDS[kind])
    return kind

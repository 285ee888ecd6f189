"""One daily-partitioned asset per declared meter: `usage/<meter>`."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.partitions import daily_partitions
from billing_pipeline.resources import PostgresResource
from billing_pipeline.usage.daily_usage import UsageSummary, refresh_daily_usage
from billing_pipeline.usage.meters import METERS, Meter

USAGE_GROUP = "usage"


def usage_asset_key(meter: Meter) -> dg.AssetKey:
    return dg.AssetKey([USAGE_GROUP, meter.name])


def _metadata(summary: UsageSummary) -> dict[str, Any]:
    return {
        "dagster/row_count": summary.rows,
        "organizations": summary.organizations,
        "total": summary.total,
        "preview": markdown_table(
            ("day", "organization", "value"), summary.top, numeric=("organization", "value")
        ),
    }


def build_usage_asset(meter: Meter) -> dg.AssetsDefinition:
    @dg.asset(
        key=usage_asset_key(meter),
        group_name=USAGE_GROUP,
        partitions_def=daily_partitions,
        # A range backfill is one run and one SQL statement over the whole window.
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=f"{meter.display_name} per organization and UTC day "
        f"(Stripe event `{meter.event_name}`, aggregation `{meter.aggregation}`). "
        f"{meter.description}",
        kinds={"postgres"},
        metadata={"stripe_event_name": meter.event_name, "aggregation": meter.aggregation},
    )
    def usage(
        context: dg.AssetExecutionContext, postgres: PostgresResource
    ) -> dg.MaterializeResult:
        start, end = context.partition_time_window
        summary = refresh_daily_usage(postgres.engine(), meter, start, end)
        context.log.info(
            f"{meter.name} {start:%Y-%m-%d}..{end:%Y-%m-%d}: {summary.rows} rows, "
            f"{summary.organizations} organizations, total {summary.total}"
        )
        return dg.MaterializeResult(metadata=_metadata(summary))

    return usage


def build_usage_assets(meters: Sequence[Meter] = METERS) -> list[dg.AssetsDefinition]:
    return [build_usage_asset(meter) for meter in meters]

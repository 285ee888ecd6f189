"""One daily-partitioned asset per declared meter: `usage/<meter>`."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from billing_pipeline.day_ranges import day_range
from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.partitions import daily_partitions
from billing_pipeline.resources import PostgresResource
from billing_pipeline.usage.daily_usage import DayUsage, refresh_daily_usage
from billing_pipeline.usage.meters import METERS, Meter

USAGE_GROUP = "usage"


def usage_asset_key(meter: Meter) -> dg.AssetKey:
    return dg.AssetKey([USAGE_GROUP, meter.name])


def _metadata(day: DayUsage) -> dict[str, Any]:
    """One day's figures, for that day's partition: plots over partitions show the daily series."""
    return {
        "dagster/row_count": day.rows,
        "organizations": day.organizations,
        "total": day.total,
        "preview": markdown_table(
            ("organization", "value"), day.top, numeric=("organization", "value")
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
        days = refresh_daily_usage(postgres.engine(), meter, start, end)
        # A range run materializes every day of the window at once; each day's materialization
        # gets that day's figures, and only the run window itself is shared by all of them.
        for key in context.partition_keys:
            window = daily_partitions.time_window_for_partition_key(key)
            context.add_asset_metadata(_metadata(days[window.start.date()]), partition_key=key)
        run_window = day_range(start.date(), end.date())
        context.log.info(
            f"{meter.name} {run_window}: {sum(day.rows for day in days.values())} rows, "
            f"total {sum(day.total for day in days.values())} over the window"
        )
        return dg.MaterializeResult(metadata={"run window": run_window})

    return usage


def build_usage_assets(meters: Sequence[Meter] = METERS) -> list[dg.AssetsDefinition]:
    return [build_usage_asset(meter) for meter in meters]

"""The code location loads: what `dagster dev` and the webserver do first, checked in a second."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import dagster as dg

from billing_pipeline import config
from billing_pipeline.definitions import defs
from billing_pipeline.partitions import FIRST_BILLED_DAY
from billing_pipeline.stripe_reporting.jobs import partition_range_tags


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


def test_every_job_and_asset_resolves() -> None:
    repository = defs.get_repository_def()
    for job in repository.get_all_jobs():
        assert job.name
    assert repository.asset_graph is not None


def test_the_reporting_asset_depends_on_the_subscriptions_it_bills_by() -> None:
    """Lineage shows the edge; the daily job still computes only the usage and reports it."""
    graph = defs.resolve_asset_graph()
    reporting = dg.AssetKey(["stripe", "meter_events"])
    assert dg.AssetKey("stripe_subscriptions") in graph.get(reporting).parent_keys
    job = defs.resolve_job_def("daily_billing")
    assert dg.AssetKey("stripe_subscriptions") not in job.asset_layer.executable_asset_keys


def test_partitions_start_at_billing_partitions_start() -> None:
    """The code server reads the setting when it loads the code location; a bad value stops
    the load naming the variable."""
    load = (
        "from billing_pipeline.definitions import defs; "
        "job = defs.resolve_job_def('daily_billing'); "
        "print(job.partitions_def.get_first_partition_key())"
    )
    env = {**os.environ, config.PARTITIONS_START: "2026-11-30"}
    shown = subprocess.run(
        [sys.executable, "-c", load], env=env, capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "2026-11-30"
    env[config.PARTITIONS_START] = "30/11/2026"
    refused = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "BILLING_PARTITIONS_START must be a day like 2026-01-31, not '30/11/2026'" in (
        refused.stderr
    )


def test_a_range_run_never_starts_before_the_first_partition() -> None:
    """The 35-day recompute on data younger than 35 days covers the partitions there are."""
    before = FIRST_BILLED_DAY - timedelta(days=20)
    tags = partition_range_tags(before, FIRST_BILLED_DAY + timedelta(days=3))
    assert tags["dagster/asset_partition_range_start"] == FIRST_BILLED_DAY.isoformat()
    assert (
        tags["dagster/asset_partition_range_end"]
        == (FIRST_BILLED_DAY + timedelta(days=3)).isoformat()
    )

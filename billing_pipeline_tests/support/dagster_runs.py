"""Dagster helpers: run the project's assets, checks, sensors and jobs on the test instance.

Everything runs on a real Dagster instance (dagster-postgres) with the project's resources bound
to the test database and the Stripe emulator, so a test sees what production would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecord
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from sqlalchemy import Engine

from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.assets import build_reporting_asset
from billing_pipeline.usage.assets import build_usage_assets
from billing_pipeline.webhooks.definitions import defs as webhook_defs
from billing_pipeline_tests.support.stripe import TEST_KEY
from stripe_emulator.control import EmulatorControl

# The daily billing graph: one usage asset per meter, then the Stripe reporting asset.
BILLING_ASSETS = [*build_usage_assets(), build_reporting_asset()]


def emulator_stripe(api_base: str | None, **settings: Any) -> StripeResource:
    """The Stripe resource on the emulator: quick backoff, so faults are fast."""
    defaults: dict[str, Any] = {
        "secret_key": TEST_KEY,
        "api_base": api_base,
        "retry_attempts": 10,
        "retry_base_seconds": 0.01,
    }
    return StripeResource(**{**defaults, **settings})


def pipeline_resources(
    database_url: str, stripe: StripeResource | None = None
) -> dict[str, dg.ConfigurableResource]:
    """`postgres` and `stripe` as the code location binds them; no key unless `stripe` is given."""
    return {
        "postgres": PostgresResource(database_url=database_url),
        "stripe": stripe or StripeResource(),
    }


def materialize_day(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    day: date,
    assets: Sequence[dg.AssetsDefinition | dg.AssetChecksDefinition] = BILLING_ASSETS,
) -> dg.ExecuteInProcessResult:
    """One day's partition of `assets`; failures are returned, not raised, for tests to read."""
    return dg.materialize(
        assets,
        partition_key=day.isoformat(),
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def evaluate_checks(
    instance: dg.DagsterInstance, database_url: str, checks: Sequence[dg.AssetChecksDefinition]
) -> dict[str, dg.AssetCheckEvaluation]:
    """Run unpartitioned asset checks alone; their evaluations by check name."""
    result = dg.materialize(
        checks,
        instance=instance,
        resources={"postgres": PostgresResource(database_url=database_url)},
        selection=dg.AssetSelection.checks(*checks),
        raise_on_error=False,
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def check_history_of_run(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, run_id: str
) -> dict[str | None, AssetCheckExecutionRecord]:
    """The rows the instance holds for `check_key` from one run, by partition (None for an
    unpartitioned row): what the check's history in the UI lists, planned or skipped included."""
    history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=1000)
    return {record.partition: record for record in history if record.run_id == run_id}


def day_evaluations(
    instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, run_id: str
) -> dict[date, dg.AssetCheckEvaluation]:
    """Each day's evaluation of a partitioned check in one run, read back from the instance;
    fails if the run left a row without a partition or without an evaluation (planned,
    skipped)."""
    rows = check_history_of_run(instance, check_key, run_id)
    assert None not in rows, "an unpartitioned row"
    evaluations = {date.fromisoformat(str(day)): row.evaluation for day, row in rows.items()}
    unevaluated = {day: rows[day.isoformat()].status for day, e in evaluations.items() if not e}
    assert not unevaluated, unevaluated
    return {day: e for day, e in evaluations.items() if e is not None}


def evaluate_sensor(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    database_url: str,
    cursor: str | None,
) -> dg.SensorResult:
    """One tick of a sensor reading the test database, as the daemon would evaluate it."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"postgres": PostgresResource(database_url=database_url)},
    )
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def webhook_definitions(resources: dict[str, Any]) -> dg.Definitions:
    """webhook_defs as definitions.py merges them, the resources coming from outside."""
    return dg.Definitions.merge(webhook_defs, dg.Definitions(resources=resources))


def run_webhook_job(
    instance: dg.DagsterInstance, resources: dict[str, Any], run_key: str | None = None
) -> dg.ExecuteInProcessResult:
    """Launch `process_stripe_webhooks` in process, tagged with `run_key` as a sensor would."""
    job = webhook_definitions(resources).resolve_job_def("process_stripe_webhooks")
    tags = {} if run_key is None else {"dagster/run_key": run_key}
    return job.execute_in_process(instance=instance, tags=tags)


@dataclass(frozen=True)
class Billing:
    """What an end-to-end billing test needs, in one fixture.

    The test database (emptied), the Dagster instance, the emulator (emptied, the project's
    meters created) and the resources a run binds to them.
    """

    engine: Engine
    database_url: str
    instance: dg.DagsterInstance
    emulator: EmulatorControl
    stripe_billing: StripeBilling
    api_base: str

    @property
    def postgres(self) -> PostgresResource:
        return PostgresResource(database_url=self.database_url)

    def stripe(self, **settings: Any) -> StripeResource:
        """The Stripe resource on the emulator (see `emulator_stripe`), with `settings` changed."""
        return emulator_stripe(self.api_base, **settings)

    def resources(self, stripe: StripeResource | None = None) -> dict[str, Any]:
        """`postgres` and `stripe` bound to the test database and the emulator."""
        return {"postgres": self.postgres, "stripe": stripe or self.stripe()}

    def materialize_day(
        self,
        day: date,
        assets: Sequence[dg.AssetsDefinition | dg.AssetChecksDefinition] = BILLING_ASSETS,
        *,
        stripe: StripeResource | None = None,
    ) -> dg.ExecuteInProcessResult:
        return materialize_day(self.instance, self.resources(stripe), day, assets)


# What a daemon workspace loads. The daemon imports code by module attribute, in this process,
# so `daemon_workspace` publishes the test's definitions here while the workspace is open.
workspace_defs: dg.Definitions | None = None


@contextmanager
def daemon_workspace(
    instance: dg.DagsterInstance, definitions: dg.Definitions
) -> Iterator[WorkspaceProcessContext]:
    """A daemon's workspace on `instance` whose code location is `definitions`."""
    global workspace_defs  # the loader reads the module attribute
    workspace_defs = definitions
    origin = LoadableTargetOrigin(
        module_name=__name__, attribute="workspace_defs", working_directory=os.getcwd()
    )
    target = InProcessWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(origin, location_name="billing_pipeline")
    )
    try:
        with create_test_daemon_workspace_context(target, instance) as context:
            yield context
    finally:
        workspace_defs = None

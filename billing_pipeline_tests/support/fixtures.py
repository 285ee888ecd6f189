"""Every fixture of the test package, registered once from billing_pipeline_tests/conftest.py.

Databases: `postgres_server_url`, `database_url`, `engine` (emptied per test), `dagster_instance`.
Stripe for the pipeline: `emulator_server` (the running StripeEmulator), `emulator_control`
(emptied, real clock, the project's meters created), `stripe_billing`, `meter_kind` (the meters
recreated raw, then pre-aggregated: a test using it runs for both), and `billing`, which
bundles all of them for end-to-end tests.
The emulator's own tests: `emulator_at_noon` (emptied, no meters, clock pinned at NOON),
`stripe_client`, `customer`, `make_meter`, `readings_meter`, `webhook_recorder`.
Webhooks: `receiver_url`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import stripe
from sqlalchemy import Engine

from billing_pipeline import config
from billing_pipeline.db import migrate
from billing_pipeline.db.embedded import EmbeddedPostgres
from billing_pipeline.db.engine import make_engine, render_url
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.meter_sync import sync_meters
from billing_pipeline.usage.meters import METERS
from billing_pipeline.webhooks.app import create_app
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.databases import create_database, drop_database, truncate_all
from billing_pipeline_tests.support.meter_kinds import KINDS, recreate_meters
from billing_pipeline_tests.support.stripe import (
    FAST_RETRY,
    NOON,
    TEST_KEY,
    WebhookRecorder,
    make_client,
    recording_endpoint,
)
from billing_pipeline_tests.support.webhooks import OLD_SECRET, SECRET, serve
from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator
from stripe_emulator.store import NegativeValues

REPO = Path(__file__).resolve().parents[2]

# -- PostgreSQL: the server in `DATABASE_URL`, or an embedded one (`.ci/run` runs both ways).
# Every session migrates fresh databases of its own.


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: `DATABASE_URL` when given, otherwise a private embedded cluster."""
    if url := config.env(config.DATABASE_URL):
        yield render_url(url)
        return
    pgdata: Path = tmp_path_factory.mktemp("embedded") / "pgdata"
    with EmbeddedPostgres(pgdata, delete_on_stop=True) as server:
        yield server.url


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A migrated database for this test session."""
    url = create_database(postgres_server_url, "billing_test")
    migrate.upgrade(url)
    yield url
    drop_database(postgres_server_url, url)


@pytest.fixture(scope="session")
def session_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=10, max_overflow=20)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(session_engine: Engine) -> Engine:
    """The session database, emptied before the test so every test starts from nothing."""
    truncate_all(session_engine)
    return session_engine


@pytest.fixture(scope="session")
def dagster_storage_url(postgres_server_url: str) -> Iterator[str]:
    """A database for Dagster's own run, event and schedule storage (dagster-postgres)."""
    url = create_database(postgres_server_url, "dagster_test")
    yield url
    drop_database(postgres_server_url, url)


@pytest.fixture(scope="session")
def dagster_instance(dagster_storage_url: str) -> Iterator[dg.DagsterInstance]:
    """A real Dagster instance on Postgres, as production runs it."""
    with dg.instance_for_test(
        overrides={"storage": {"postgres": {"postgres_url": dagster_storage_url}}}
    ) as instance:
        yield instance


@pytest.fixture
def synchronous_instance(postgres_server_url: str) -> Iterator[dg.DagsterInstance]:
    """An instance of its own whose launcher executes each run before the daemon moves on."""
    url = create_database(postgres_server_url, "dagster_synchronous")
    with dg.instance_for_test(
        overrides={
            "storage": {"postgres": {"postgres_url": url}},
            # Submitted runs start at once instead of waiting for the run queue daemon.
            "run_coordinator": {
                "module": "dagster._core.run_coordinator",
                "class": "DefaultRunCoordinator",
            },
            "run_launcher": {
                "module": "dagster._core.launcher.sync_in_memory_run_launcher",
                "class": "SyncInMemoryRunLauncher",
            },
        }
    ) as instance:
        yield instance
    drop_database(postgres_server_url, url)


# -- Dagster as production runs it (support/processes.py): an instance of its own per test.


@pytest.fixture
def dagster_pg_url(postgres_server_url: str) -> Iterator[str]:
    """Dagster storage of its own: the daemon and webserver of this test only."""
    url = create_database(postgres_server_url, "dagster_topology")
    yield url
    drop_database(postgres_server_url, url)


@pytest.fixture
def dagster_home(tmp_path: Path, dagster_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding docs/dagster.production.yaml, on `dagster_pg_url`."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "docs" / "dagster.production.yaml", home / "dagster.yaml")
    monkeypatch.setenv(config.DAGSTER_PG_URL, dagster_pg_url)
    return home


# -- Stripe, as the pipeline sees it: the emulator over real HTTP, reached by the official SDK.


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[StripeEmulator]:
    """One running emulator for the session; each test empties it through a control fixture.

    Every response is checked against Stripe's published shape (a departure fails the test
    with a 500), and STRIPE_EMULATOR_NEGATIVE_VALUES=refused runs the suite under the stricter
    reading of meter event values (Stripe's references disagree; the pipeline must pass both).
    """
    reading = os.environ.get("STRIPE_EMULATOR_NEGATIVE_VALUES", "allowed")
    assert reading in ("allowed", "refused"), reading
    negative_values: NegativeValues = "refused" if reading == "refused" else "allowed"
    with StripeEmulator(port=0, check_responses=True, negative_values=negative_values) as emulator:
        yield emulator


@pytest.fixture
def emulator_control(emulator_server: StripeEmulator) -> Iterator[EmulatorControl]:
    """The emulator, emptied, with real time, no faults and the declared meters created."""
    control = emulator_server.control
    control.reset()
    sync_meters(StripeBilling(TEST_KEY, emulator_server.url), METERS)
    yield control
    assert_published_shapes(control)


@pytest.fixture
def stripe_billing(
    emulator_server: StripeEmulator, emulator_control: EmulatorControl
) -> StripeBilling:
    """The project's Stripe seam on the emulator, with quick retries."""
    return StripeBilling(TEST_KEY, emulator_server.url, retry=FAST_RETRY)


@pytest.fixture(params=list(KINDS))
def meter_kind(
    request: pytest.FixtureRequest, emulator_control: EmulatorControl, stripe_billing: StripeBilling
) -> str:
    """The declared meters recreated as `raw` or `pre_aggregated` Stripe meters (both run)."""
    kind: str = request.param
    recreate_meters(emulator_control, stripe_billing, kind)
    return kind


@pytest.fixture(params=["allowed", "refused"])
def negative_values(
    request: pytest.FixtureRequest, emulator_control: EmulatorControl, stripe_billing: StripeBilling
) -> str:
    """Raw meters, with the emulator reading Stripe's ambiguous negative-value rule one way or
    the other (both run): a test asking for it must be right under both."""
    recreate_meters(emulator_control, stripe_billing, "raw")
    emulator_control.set_negative_values(request.param)
    return str(request.param)


@pytest.fixture
def billing(
    engine: Engine,
    database_url: str,
    dagster_instance: dg.DagsterInstance,
    emulator_server: StripeEmulator,
    emulator_control: EmulatorControl,
    stripe_billing: StripeBilling,
) -> Billing:
    """Everything an end-to-end billing test needs: database, instance, emulator, resources."""
    return Billing(
        engine=engine,
        database_url=database_url,
        instance=dagster_instance,
        emulator=emulator_control,
        stripe_billing=stripe_billing,
        api_base=emulator_server.url,
    )


# -- The emulator's own tests: an empty emulator whose clock is pinned, and a plain SDK client.


@pytest.fixture
def emulator_at_noon(emulator_server: StripeEmulator) -> Iterator[EmulatorControl]:
    """The emulator emptied (no meters), its clock pinned at NOON."""
    control = emulator_server.control
    control.reset()
    control.set_clock(NOON)
    yield control
    assert_published_shapes(control)


def assert_published_shapes(control: EmulatorControl) -> None:
    """A webhook event in a shape Stripe never sends cannot fail its delivery: fail the test."""
    violations = control.contract()["violations"]
    assert violations == [], violations


@pytest.fixture
def stripe_client(
    emulator_server: StripeEmulator, emulator_at_noon: EmulatorControl
) -> stripe.StripeClient:
    return make_client(emulator_server.url)


@pytest.fixture
def customer(stripe_client: stripe.StripeClient) -> str:
    return stripe_client.v1.customers.create({"email": "org1@example.com"}).id


@pytest.fixture
def make_meter(stripe_client: stripe.StripeClient) -> Callable[..., Any]:
    def create(event_name: str, formula: str = "sum", **extra: Any) -> Any:
        params: Any = {
            "display_name": event_name.replace("_", " ").title(),
            "event_name": event_name,
            "default_aggregation": {"formula": formula},
            **extra,
        }
        return stripe_client.v1.billing.meters.create(params)

    return create


@pytest.fixture
def readings_meter(make_meter: Callable[..., Any]) -> Any:
    """A `sum` meter for the event name `readings`."""
    return make_meter("readings", "sum")


@pytest.fixture
def webhook_recorder() -> Iterator[WebhookRecorder]:
    """An HTTP endpoint recording the webhooks the emulator (or its CLI) delivers."""
    with recording_endpoint() as recorder:
        yield recorder


# -- Webhooks: the project's receiver over real HTTP.


@pytest.fixture
def receiver_url(engine: Engine, database_url: str) -> Iterator[str]:
    """Base URL of a receiver accepting the current and the previous secret (a rotation)."""
    with serve(create_app(database_url, [SECRET, OLD_SECRET], max_body_bytes=64 * 1024)) as url:
        yield url

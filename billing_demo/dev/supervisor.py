"""`billing-pipeline dev`: Postgres, the schema, demo data, Stripe and Dagster, as one process.

The supervisor owns everything it starts and stops it in reverse order, children first and
Postgres last, on Ctrl-C, on SIGTERM, or when any child dies: a newcomer's machine should never
keep a stray PostgreSQL or Dagster process. Without `STRIPE_SECRET_KEY` the Stripe emulator runs
in-process and everything is pointed at it; without a webhook secret the receiver is left out.
Dagster runs as in production, a code server with a webserver and a daemon connected to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from billing_demo.dev import webhook_demo
from billing_demo.dev.alert_sink import AlertSink, print_alert
from billing_demo.dev.dagster_processes import (
    code_server_service,
    dagster_storage_url,
    free_port,
    prepare_dagster_home,
    webserver_and_daemon,
    write_grpc_workspace,
)
from billing_demo.dev.services import (
    RunningService,
    Service,
    ServiceError,
    ensure_port_free,
    script,
    start,
    stop_all,
)
from billing_demo.dev.state import SupervisorState, forget_settings, record_settings
from billing_demo.subscriptions import DemoSubscription, create_demo_subscriptions
from billing_pipeline import config
from billing_pipeline.db import migrate
from billing_pipeline.db.database import database_url
from billing_pipeline.db.engine import make_engine
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.usage.meters import METERS

REPO_ROOT = Path(__file__).resolve().parents[2]
# A test-mode-looking key that only the emulator accepts; real Stripe rejects it.
EMULATOR_SECRET_KEY = "sk_test_emulator"
# Where the webhook receiver accepts Stripe's events.
WEBHOOK_PATH = "/webhooks/stripe"
RECEIVER = "webhook receiver"


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    dagster_port: int = 3000
    emulator_port: int = 12111
    webhook_port: int = 8787
    alerts_port: int = 8790
    seed: bool = True
    billing_only: bool = False
    # A workspace.yaml of the user's instead of the code server the demo starts.
    workspace: Path | None = None
    dagster_yaml: Path = REPO_ROOT / "dagster.yaml"


CLI = (sys.executable, "-m", "billing_pipeline.cli")


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM both unwind the stack, so one `finally` path stops everything.

    SIGINT is installed explicitly: a shell without job control starts background commands with
    SIGINT ignored, and Python then never raises KeyboardInterrupt.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_signals() -> None:
    """Once stopping has begun, a second Ctrl-C must not cut the cleanup short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def has_application_data(url: str) -> bool:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            return bool(
                connection.execute(text("SELECT EXISTS (SELECT 1 FROM organizations)")).scalar()
            )
    finally:
        engine.dispose()


def first_data_day(url: str) -> date | None:
    """The UTC day of the first reading, if there is any."""
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            day: date | None = connection.execute(
                text("SELECT (min(recorded_at) AT TIME ZONE 'UTC')::date FROM temperature_readings")
            ).scalar()
            return day
    finally:
        engine.dispose()


def run_step(argv: list[str], env: Mapping[str, str], what: str, *, quiet: bool = False) -> None:
    """Run a setup command to completion; `quiet` shows its output only if it fails."""
    print(f"[dev] {what}…", flush=True)
    result = subprocess.run(argv, env=dict(env), check=False, capture_output=quiet, text=True)
    if result.returncode != 0:
        if quiet:
            print(result.stdout + result.stderr, file=sys.stderr)
        raise ServiceError(f"{what} failed (exit code {result.returncode})")


def prepare_stripe(env: Mapping[str, str]) -> None:
    """Make the Stripe account (real or emulated) ready for the pipeline.

    Runs before Dagster starts so the first scheduled run finds the meters it reports to.
    """
    if config.STRIPE_SECRET_KEY not in env:
        return
    run_step([*CLI, "stripe", "sync-meters"], env, "creating Stripe meters")


def subscribe_demo_organizations(url: str, env: Mapping[str, str]) -> DemoSubscription | None:
    """With a test-mode key (the emulator's included), subscribe the seeded paying organizations
    in Stripe; return the lowest one's subscription, the target of the printed test webhook.

    Runs once the receiver is up and the emulator delivers to it, so Stripe's
    `customer.subscription.created` events reach the webhook flow, which fills `subscriptions`.
    """
    key = env.get(config.STRIPE_SECRET_KEY, "")
    if not key.startswith("sk_test_"):
        return None
    print("[dev] subscribing the paying demo organizations in Stripe…", flush=True)
    engine = make_engine(url, pool_size=1)
    try:
        billing = StripeBilling(key, env.get(config.STRIPE_API_BASE))
        result = create_demo_subscriptions(engine, billing, list(METERS))
    except Exception as error:
        raise ServiceError(f"subscribing the demo organizations failed: {error}") from error
    finally:
        engine.dispose()
    everyone = result.all
    return everyone[0] if everyone else None


def webhook_service(options: Options) -> Service:
    port = options.webhook_port
    return Service(
        RECEIVER,
        [*CLI, "webhooks", "serve", "--port", str(port)],
        ready_url=f"http://127.0.0.1:{port}/healthz",
        port=port,
    )


def run(options: Options) -> int:
    """Start everything, wait for Ctrl-C/SIGTERM or a child's death, then stop everything."""
    data_dir = config.data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    state = SupervisorState(data_dir)
    stack = ExitStack()
    with _signals_raise():
        try:
            if stopped := state.recover():
                print(f"[dev] stopped leftovers of a killed supervisor: {', '.join(stopped)}")
            state.begin()
            stack.callback(state.end)
            return _run(options, stack, state, data_dir)
        except KeyboardInterrupt:
            print("\n[dev] stopping…", flush=True)
            return 0
        except ServiceError as error:
            print(f"[dev] error: {error}", file=sys.stderr, flush=True)
            return 1
        finally:
            _ignore_signals()
            stack.close()
            print("[dev] stopped.", flush=True)


def _run(options: Options, stack: ExitStack, state: SupervisorState, data_dir: Path) -> int:
    use_emulator = config.env(config.STRIPE_SECRET_KEY) is None
    first: list[Service] = [webhook_service(options)]
    workspace = options.workspace
    if workspace is None:
        code_port = free_port()
        first.append(code_server_service(code_port))
        workspace = write_grpc_workspace(data_dir / "workspace.yaml", code_port)
    # The webserver and the daemon connect to the code server, so they start once it serves.
    then = webserver_and_daemon(workspace, options.host, options.dagster_port)
    # Fail on a busy port before spending time on Postgres, naming the port.
    for service in [*first, *then]:
        if service.port is not None:
            ensure_port_free(service.port, service.name)
    if use_emulator:
        ensure_port_free(options.emulator_port, "Stripe emulator")
    alerts = _alert_sink(options, stack)

    url = stack.enter_context(database_url())
    print("[dev] migrating the database…", flush=True)
    migrate.upgrade(url, migrate.BILLING_HEAD if options.billing_only else migrate.ALL_HEADS)
    env: dict[str, str] = {
        **os.environ,
        config.DATABASE_URL: url,
        config.DATA_DIR: str(data_dir),
        config.DAGSTER_HOME: str(prepare_dagster_home(options.dagster_yaml)),
        config.DAGSTER_PG_URL: dagster_storage_url(url),
    }
    # Alerts link to runs in this UI, on whatever port it was given.
    env.setdefault(config.DAGSTER_UI_URL, f"http://{options.host}:{options.dagster_port}")
    if alerts is not None:
        env[config.ALERTS_WEBHOOK_URL] = alerts.url()
    if options.seed and not options.billing_only and not has_application_data(url):
        run_step([*CLI, "seed"], env, "seeding demo data")
    if (
        not options.billing_only
        and config.PARTITIONS_START not in env
        and (first_day := first_data_day(url)) is not None
    ):
        # Dagster's partitions start where the readings do, so Lineage shows the demo's days
        # as they are instead of hundreds of "missing" days before any data.
        env[config.PARTITIONS_START] = first_day.isoformat()

    emulator = _start_emulator(options, stack, data_dir, env) if use_emulator else None
    # Commands typed in another terminal (`status --stripe`, `stripe invoices`…) find the
    # emulator and Dagster's instance here, as they find the embedded database by the data
    # directory. A real key is never written to disk: it stays in the user's environment.
    shared = [config.DAGSTER_HOME, config.DAGSTER_PG_URL]
    if emulator is not None:
        shared += [config.STRIPE_API_BASE, config.STRIPE_SECRET_KEY]
    record_settings(data_dir, {name: env[name] for name in shared})
    stack.callback(forget_settings, data_dir)
    prepare_stripe(env)
    if config.STRIPE_WEBHOOK_SECRET not in env:
        first = [s for s in first if s.name != RECEIVER]
    # Create or upgrade Dagster's tables once, before several processes race to do it.
    run_step(
        [script("dagster"), "instance", "migrate"], env, "preparing Dagster's storage", quiet=True
    )

    running: list[RunningService] = []
    stack.callback(stop_all, running)
    for stage in (first, then):
        started = [start(service, env) for service in stage]
        for child in started:
            running.append(child)
            state.add(child)
        for child in started:
            child.wait_ready()
    receiving = any(s.name == RECEIVER for s in first)
    if emulator is not None and receiving:
        # Snapshot events (subscriptions, invoices) and thin meter-error events have separate
        # endpoints, as a Stripe webhook endpoint and an event destination do.
        receiver = f"http://127.0.0.1:{options.webhook_port}{WEBHOOK_PATH}"
        emulator.control.set_webhook_endpoint(receiver)
        emulator.control.set_event_destination(f"{receiver}/thin")
    target = None
    if not options.billing_only:
        target = subscribe_demo_organizations(url, env)

    _print_urls(options, url, env, emulator, receiving, target, alerts)
    while True:
        for child in running:
            if (code := child.exited()) is not None:
                print(f"[dev] {child.name} exited with code {code}; stopping the rest", flush=True)
                return 1
        time.sleep(0.5)


def _alert_sink(options: Options, stack: ExitStack) -> AlertSink | None:
    """Without a sink of the user's, the demo's own: it prints each alert here, `[alert] …`.

    Alerts would otherwise go nowhere (the code server says so in its log); a sink configured in
    the environment is used as it is and the demo starts none.
    """
    configured = [
        name
        for name in (
            config.ALERTS_SLACK_WEBHOOK_URL,
            config.ALERTS_WEBHOOK_URL,
            config.ALERTS_SMTP_URL,
        )
        if config.env(name)
    ]
    if configured:
        print(f"[dev] alerts go to the sinks in {', '.join(configured)}", flush=True)
        return None
    ensure_port_free(options.alerts_port, "alert sink")
    sink = AlertSink(options.alerts_port, on_alert=print_alert).start()
    stack.callback(sink.stop)
    print(
        f"[dev] no alert sink configured: alerts go to the demo's sink at {sink.url()}, "
        "which prints them here as [alert] lines",
        flush=True,
    )
    return sink


def _start_emulator(options: Options, stack: ExitStack, data_dir: Path, env: dict[str, str]) -> Any:
    """Run the Stripe emulator in this process and point the Stripe SDK of the children at it.

    Its state (customers, meters, events) and its webhook secret both live in the data
    directory, so a restart keeps the customers the database refers to and copied commands work.
    """
    from stripe_emulator.server import StripeEmulator

    emulator = StripeEmulator(
        port=options.emulator_port,
        state_file=data_dir / "stripe_emulator.json",
        webhook_secret=webhook_demo.persistent_webhook_secret(data_dir),
    )
    emulator.start()
    stack.callback(emulator.stop)
    env[config.STRIPE_API_BASE] = emulator.url
    env[config.STRIPE_SECRET_KEY] = EMULATOR_SECRET_KEY
    env[config.STRIPE_WEBHOOK_SECRET] = emulator.webhook_secret
    return emulator


def _print_urls(
    options: Options,
    url: str,
    env: Mapping[str, str],
    emulator: Any,
    receiving: bool,
    target: DemoSubscription | None,
    alerts: AlertSink | None,
) -> None:
    receiver_url = f"http://127.0.0.1:{options.webhook_port}{WEBHOOK_PATH}"
    lines = [f"  Dagster UI        http://{options.host}:{options.dagster_port}"]
    if emulator is not None:
        lines.append(f"  Stripe emulator   {emulator.url}")
    if receiving:
        lines.append(f"  Webhook receiver  {receiver_url}")
    lines.append(f"  Database          {make_url(url).render_as_string(hide_password=True)}")
    if alerts is not None:
        lines.append(f"  Alert sink        {alerts.url()} (prints each alert here: [alert] …)")
    if emulator is not None:
        lines.append(
            "\n  Stripe's invoices (the first ones at the end of each subscription's period):\n"
            f"    {webhook_demo.invoices_command()}\n"
            f"    or GET {emulator.url}/v1/invoices (key {EMULATOR_SECRET_KEY})\n"
            "  Every command finds this emulator by itself while the demo runs, e.g.\n"
            "    .venv/bin/billing-pipeline status --stripe"
        )
    if target is not None and emulator is not None and receiving:
        command = webhook_demo.trigger_command(
            target, receiver_url, env[config.STRIPE_WEBHOOK_SECRET]
        )
        lines.append(
            f"\n  Send a signed test webhook (like `stripe trigger`): organization "
            f"{target.organization_id}'s invoice fails,\n  so its subscription's payment_status "
            f"becomes payment_failed (`billing-pipeline subscriptions list`):\n    {command}"
        )
    print("\n[dev] billing_pipeline is running:\n" + "\n".join(lines), flush=True)
    print("[dev] press Ctrl-C to stop everything.\n", flush=True)

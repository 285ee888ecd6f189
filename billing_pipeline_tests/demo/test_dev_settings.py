"""Commands typed in another terminal find the running demo's Stripe emulator by themselves, as
they find its database: through the settings `billing-pipeline dev` records in the data
directory while it runs. Driven through the command line against the emulator over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing_demo.dev.state import forget_settings, record_settings
from billing_pipeline import cli as main_cli
from billing_pipeline import config
from billing_pipeline_tests.support.builders import (
    add_organization,
    add_readings,
    add_sensor,
    midnight,
)
from billing_pipeline_tests.support.dagster_runs import Billing
from billing_pipeline_tests.support.reporting import days_before, run_days
from billing_pipeline_tests.support.stripe import TEST_KEY, new_customer


@pytest.fixture
def data_dir(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A terminal without any Stripe variable, in the demo's directory."""
    monkeypatch.setenv(config.DATA_DIR, str(tmp_path))
    monkeypatch.setenv(config.DATABASE_URL, database_url)
    for name in (config.STRIPE_SECRET_KEY, config.STRIPE_API_BASE):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_status_dry_run_and_invoices_use_the_running_demos_emulator(
    data_dir: Path, billing: Billing, capsys: pytest.CaptureFixture[str]
) -> None:
    day = days_before(2)
    customer = new_customer(billing.stripe_billing, "Alpha")
    add_organization(billing.engine, 1, customer=customer)
    add_sensor(billing.engine, 10, 1, midnight(day))
    add_readings(billing.engine, 10, day, 4)
    window = ["--from", day.isoformat(), "--to", day.isoformat()]

    # No demo runs: nothing says which Stripe to ask, and the command says so.
    with pytest.raises(SystemExit, match="no `billing-pipeline dev` runs"):
        main_cli.main(["stripe", "invoices"])

    record_settings(
        data_dir,
        {config.STRIPE_API_BASE: billing.api_base, config.STRIPE_SECRET_KEY: TEST_KEY},
    )
    assert main_cli.main(["stripe", "invoices", "--customer", customer]) == 0
    assert "no invoices" in capsys.readouterr().out
    assert main_cli.main(["stripe", "dry-run", *window]) == 0
    # The dry run asked the emulator for its meters and plans the day's two events.
    assert "would send 2 meter events" in capsys.readouterr().out
    assert billing.emulator.meter_events() == []  # it only read

    assert run_days(billing.instance, billing.database_url, billing.api_base, day).success
    assert main_cli.main(["status", "--stripe", *window]) == 0
    output = capsys.readouterr().out
    # Stripe's (the emulator's) summaries were read: the readings' day holds the 4 sent.
    [readings] = [line for line in output.splitlines() if " temperature_readings " in line][:1]
    assert readings.split()[-1] == "4"
    assert "not reconciled" not in output

    # The environment wins over what the demo recorded.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(config.STRIPE_API_BASE, "https://api.stripe.com")
        assert config.setting(config.STRIPE_API_BASE) == "https://api.stripe.com"

    forget_settings(data_dir)  # the demo stopped
    with pytest.raises(SystemExit, match="STRIPE_SECRET_KEY is not set"):
        main_cli.main(["status", "--stripe", *window])

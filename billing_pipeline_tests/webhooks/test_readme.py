"""The webhooks README states the contract the code implements: checked where a test can."""

from __future__ import annotations

import re
from pathlib import Path

from billing_pipeline import config
from billing_pipeline.webhooks import processing
from billing_pipeline.webhooks.app import DEFAULT_MAX_BODY_BYTES
from billing_pipeline.webhooks.handlers import HANDLERS
from billing_pipeline.webhooks.linking import CHECKOUT_WAIT
from billing_pipeline.webhooks.recovery import OVERLAP
from billing_pipeline.webhooks.schedules import RECOVERY_CRON

ROOT = Path(__file__).resolve().parents[2]
WEBHOOKS_README = (ROOT / "billing_pipeline" / "webhooks" / "README.md").read_text()
README = (ROOT / "README.md").read_text()


def section(text: str, title: str) -> str:
    """The body of a `## title` section, up to the next `## `."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_the_handled_types_table_lists_exactly_the_handled_types() -> None:
    table = section(WEBHOOKS_README, "Handled event types")
    documented = re.findall(r"^\| `([a-z0-9_.]+)` \|", table, flags=re.MULTILINE)
    assert len(documented) == len(set(documented))
    assert set(documented) == set(HANDLERS)


def test_the_retry_schedule_is_the_one_the_code_keeps() -> None:
    text = section(WEBHOOKS_README, "Processing and retries")
    delays = [processing.retry_delay(n) for n in range(1, processing.MAX_ATTEMPTS)]
    assert [d.total_seconds() for d in delays] == [45, 90, 180, 360, 720]
    assert "45 s after the first failure, then 1.5, 3, 6 and 12 minutes" in text
    assert f"at its\n{processing.MAX_ATTEMPTS}th failed attempt" in text
    minutes, seconds = divmod(int(processing.DEAD_LETTER_AFTER.total_seconds()), 60)
    assert f"no sooner than {minutes} min {seconds} s after the first" in text
    # The span the issue promises operators: between 20 and 30 minutes.
    assert 20 <= minutes < 30


def test_recovery_and_limits_are_described_with_the_codes_values() -> None:
    recovery = section(WEBHOOKS_README, "Recovery of missed events")
    assert RECOVERY_CRON == "17 * * * *" and "hourly at :17" in recovery
    assert f"{int(OVERLAP.total_seconds() // 60)} minutes before it" in recovery
    serving = section(WEBHOOKS_README, "Serving")
    assert config.STRIPE_WEBHOOK_MAX_BODY_BYTES in serving
    assert f"default {DEFAULT_MAX_BODY_BYTES}" in serving


def test_the_readme_configuration_table_names_every_setting() -> None:
    table = section(README, "Configuration")
    names = [
        value for name, value in vars(config).items() if name.isupper() and isinstance(value, str)
    ]
    assert names and all(f"| `{name}` |" in table for name in names)


def test_the_checkout_wait_is_the_one_the_code_keeps_and_ends_before_the_dead_letter() -> None:
    text = section(WEBHOOKS_README, "Identification: which organization an event belongs to")
    minutes = int(CHECKOUT_WAIT.total_seconds() // 60)
    assert f"only once the event has waited {minutes} minutes in the inbox" in text
    assert CHECKOUT_WAIT < processing.DEAD_LETTER_AFTER

"""How an alert reads: plain text, Slack's incoming-webhook payload, the generic JSON document."""

from __future__ import annotations

from dataclasses import replace

from billing_pipeline.alerts.messages import (
    Alert,
    format_days,
    render_text,
    slack_payload,
    webhook_payload,
)
from billing_pipeline_tests.support.alert_sinks import RUN_ALERT

RUN_URL = RUN_ALERT.run_url

# A failed check: the run alert's fields, with what a check names.
ALERT = replace(
    RUN_ALERT,
    key="check/7",
    kind="check",
    title="check ledger_failed_rows on stripe/meter_events failed",
    days=("2026-12-03", "2026-12-01", "2026-12-02", "2026-12-06"),
    organizations=("1", "2"),
    details="2 meter events failed",
    extra={"Figures": "rows 2"},
)


def test_days_read_as_inclusive_ranges_of_consecutive_days() -> None:
    assert format_days(ALERT.days) == "2026-12-01 to 2026-12-03 (3 days), 2026-12-06"
    assert format_days(["2026-12-31", "2027-01-01"]) == "2026-12-31 to 2027-01-01 (2 days)"


def test_the_text_names_what_failed_days_customers_and_the_run() -> None:
    assert render_text(ALERT) == (
        "[billing error] check ledger_failed_rows on stripe/meter_events failed\n"
        "Figures: rows 2\n"
        "Days: 2026-12-01 to 2026-12-03 (3 days), 2026-12-06\n"
        "Customers: cus_A\n"
        "Organizations: 1, 2\n"
        f"Run: {RUN_URL}\n"
        "\n"
        "2 meter events failed"
    )


def test_a_long_list_of_customers_is_cut_with_a_count() -> None:
    many = Alert(**{**ALERT.to_json(), "customers": tuple(f"cus_{n:02}" for n in range(25))})
    assert "cus_19 and 5 more" in render_text(many)


def test_the_slack_payload_has_a_fallback_text_and_block_kit_sections() -> None:
    payload = slack_payload(ALERT)
    assert payload["text"] == (
        f"[billing error] check ledger_failed_rows on stripe/meter_events failed ({RUN_URL})"
    )
    header, facts, details, link = payload["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "[billing error] " + ALERT.title},
    }
    assert facts["type"] == "section"
    assert [f["text"] for f in facts["fields"]] == [
        "*Figures*\nrows 2",
        "*Days*\n2026-12-01 to 2026-12-03 (3 days), 2026-12-06",
        "*Customers*\ncus_A",
        "*Organizations*\n1, 2",
    ]
    assert all(f["type"] == "mrkdwn" for f in facts["fields"])
    assert details == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "```2 meter events failed```"},
    }
    assert link["text"]["text"] == f"<{RUN_URL}|Open the run in Dagster>"


def test_the_json_payload_carries_every_field_and_the_text() -> None:
    payload = webhook_payload(ALERT)
    assert payload["key"] == "check/7"
    assert payload["days"] == list(ALERT.days)
    assert payload["run_url"] == RUN_URL
    assert payload["text"] == render_text(ALERT)
    assert Alert.from_json(ALERT.to_json()) == ALERT

"""The demo's alert sink prints what the pipeline's JSON webhook sink sends it, line by line."""

from __future__ import annotations

import pytest

from billing_demo.dev.alert_sink import AlertSink, print_alert
from billing_pipeline.alerts.sinks import JsonWebhookSink
from billing_pipeline_tests.support.alert_sinks import RUN_ALERT


def test_an_alert_sent_to_the_demo_sink_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with AlertSink(on_alert=print_alert) as sink:
        JsonWebhookSink(sink.url()).send(RUN_ALERT)
    assert capsys.readouterr().out.splitlines() == [
        "[alert] [billing error] run of daily_billing failed",
        "[alert] Days: 2026-12-05",
        "[alert] Customers: cus_A",
        "[alert] Run: http://127.0.0.1:3000/runs/abc",
    ]
    assert [path for path, _ in sink.received] == ["/alerts"]

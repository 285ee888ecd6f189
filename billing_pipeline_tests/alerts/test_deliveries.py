"""Delivery to real HTTP sinks through billing.alert_deliveries: once per failure and sink,
retried a bounded number of times when the sink refuses, recorded either way."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from billing_pipeline import config
from billing_pipeline.alerts.deliveries import MAX_ATTEMPTS, deliver_due, record
from billing_pipeline.alerts.messages import render_text
from billing_pipeline.alerts.sinks import JsonWebhookSink, Sink, SlackSink, configured_sinks
from billing_pipeline.db.statuses import AlertDeliveryStatus
from billing_pipeline_tests.support.alert_sinks import RUN_ALERT as ALERT
from billing_pipeline_tests.support.alert_sinks import RecordingSink
from billing_pipeline_tests.support.network import free_port
from billing_pipeline_tests.support.smtp import smtp_server


def deliveries(engine: Engine) -> list[tuple[str, str, int, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT sink, status, attempts, last_error FROM billing.alert_deliveries "
                "ORDER BY sink"
            )
        ).all()
    return [(r.sink, r.status, r.attempts, r.last_error) for r in rows]


def make_due(engine: Engine) -> None:
    """What waiting out the backoff does."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE billing.alert_deliveries SET next_attempt_at = now()"))


def test_one_failure_recorded_and_delivered_twice_is_one_message_per_sink(engine: Engine) -> None:
    with RecordingSink() as sink:
        sinks: list[Sink] = [SlackSink(sink.url("/slack")), JsonWebhookSink(sink.url("/webhook"))]
        # A tick evaluated again (after a crash, or by the other sensor) records it again.
        assert record(engine, ALERT, sinks) == 2
        first = deliver_due(engine, sinks)
        assert record(engine, ALERT, sinks) == 0
        second = deliver_due(engine, sinks)

        assert sorted(path for path, _ in sink.received) == ["/slack", "/webhook"]
    assert (len(first.sent), len(second.sent)) == (2, 0)
    assert sink.bodies("/webhook")[0]["key"] == "run/abc"
    assert sink.bodies("/slack")[0]["text"].startswith("[billing error] run of daily_billing")
    assert deliveries(engine) == [
        ("slack", AlertDeliveryStatus.SENT, 1, None),
        ("webhook", AlertDeliveryStatus.SENT, 1, None),
    ]


def test_a_sink_refusing_for_a_while_gets_the_alert_once_it_takes_it(engine: Engine) -> None:
    # Each attempt tries three times (two quick retries); the first attempt's three all see 503.
    with RecordingSink(refusals=[503, 503, 503]) as sink:
        sinks = [JsonWebhookSink(sink.url("/webhook"))]
        record(engine, ALERT, sinks)

        report = deliver_due(engine, sinks)
        assert (report.sent, len(report.retrying)) == ([], 1)
        assert deliveries(engine) == [
            ("webhook", AlertDeliveryStatus.PENDING, 1, "webhook answered 503: unavailable")
        ]
        assert deliver_due(engine, sinks).sent == []  # not due before its backoff is over

        make_due(engine)
        assert deliver_due(engine, sinks).sent == ["run/abc → webhook"]
        assert sink.refused == 3
        assert len(sink.received) == 1
    assert deliveries(engine) == [("webhook", AlertDeliveryStatus.SENT, 2, None)]


def test_a_sink_that_never_answers_is_given_up_after_the_last_attempt(engine: Engine) -> None:
    sinks = [SlackSink(f"http://127.0.0.1:{free_port()}/slack")]  # nothing listens there
    record(engine, ALERT, sinks)
    for _ in range(MAX_ATTEMPTS - 1):
        assert len(deliver_due(engine, sinks).retrying) == 1
        make_due(engine)
    report = deliver_due(engine, sinks)
    assert len(report.given_up) == 1
    [(name, status, attempts, error)] = deliveries(engine)
    assert (name, status, attempts) == ("slack", AlertDeliveryStatus.FAILED, MAX_ATTEMPTS)
    assert error is not None and error.startswith("slack webhook unreachable")
    make_due(engine)
    assert deliver_due(engine, sinks).sent == []  # given up: never tried again


def test_an_alert_by_email_has_the_headline_as_subject_and_the_text_as_body(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server() as mailbox:
        monkeypatch.setenv(config.ALERTS_SMTP_URL, f"smtp://{mailbox.host}:{mailbox.port}")
        monkeypatch.setenv(config.ALERTS_EMAIL_TO, "billing@example.com, oncall@example.com")
        sinks = configured_sinks()
        record(engine, ALERT, sinks)
        assert deliver_due(engine, sinks).sent == ["run/abc → email"]
    [(sender, recipients, message)] = mailbox.messages
    assert sender == "billing-pipeline@localhost"
    assert recipients == ["billing@example.com", "oncall@example.com"]
    assert message["Subject"] == "[billing error] run of daily_billing failed"
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode().replace("\r\n", "\n")
    assert body.strip() == render_text(ALERT)


def test_an_smtp_server_without_recipients_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(config.ALERTS_SMTP_URL, "smtp://127.0.0.1:25")
    monkeypatch.delenv(config.ALERTS_EMAIL_TO, raising=False)
    with pytest.raises(ValueError, match="BILLING_ALERTS_EMAIL_TO must name who receives"):
        configured_sinks()

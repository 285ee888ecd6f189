"""Where alerts go, as the environment configures them: a Slack incoming webhook, a JSON webhook,
e-mail over SMTP.

Each sink sends one alert and raises `DeliveryError` if the receiver did not take it. Both
clients retry a few times within one attempt (connection errors, 429, 5xx); deliveries.py
retries a failed attempt later, a bounded number of times.
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient
from urllib3.util.retry import Retry

from billing_pipeline import config
from billing_pipeline.alerts.messages import (
    Alert,
    headline,
    render_text,
    slack_payload,
    webhook_payload,
)

TIMEOUT_SECONDS = 10
# Where `billing-pipeline dev` serves the UI by default; a deployment sets DAGSTER_UI_URL.
DEFAULT_UI_URL = "http://127.0.0.1:3000"
RETRIES_PER_ATTEMPT = 2


class DeliveryError(RuntimeError):
    """The sink did not take the alert; the message says what it answered."""


class Sink(Protocol):
    """One destination. `name` keys its deliveries: changing a URL keeps the history."""

    @property
    def name(self) -> str: ...

    def send(self, alert: Alert) -> None: ...


@dataclass(frozen=True)
class SlackSink:
    """A Slack incoming webhook (or anything speaking its payload: Mattermost, Rocket.Chat)."""

    url: str
    name: str = "slack"

    def send(self, alert: Alert) -> None:
        client = WebhookClient(
            self.url,
            timeout=TIMEOUT_SECONDS,
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=RETRIES_PER_ATTEMPT),
                RateLimitErrorRetryHandler(max_retry_count=RETRIES_PER_ATTEMPT),
                ServerErrorRetryHandler(max_retry_count=RETRIES_PER_ATTEMPT),
            ],
        )
        payload = slack_payload(alert)
        try:
            response = client.send(text=payload["text"], blocks=payload["blocks"])
        except OSError as error:
            raise DeliveryError(f"slack webhook unreachable: {error}") from error
        if response.status_code != 200:
            raise DeliveryError(f"slack webhook answered {response.status_code}: {response.body}")


@dataclass(frozen=True)
class JsonWebhookSink:
    """Any HTTP endpoint taking a JSON POST (PagerDuty-style relays, n8n, an internal service)."""

    url: str
    name: str = "webhook"

    def send(self, alert: Alert) -> None:
        retry = Retry(
            total=RETRIES_PER_ATTEMPT,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,  # POST too: the receiver deduplicates by `key` if it must
            raise_on_status=False,
        )
        with requests.Session() as session:
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            try:
                response = session.post(
                    self.url, json=webhook_payload(alert), timeout=TIMEOUT_SECONDS
                )
            except requests.RequestException as error:
                raise DeliveryError(f"webhook unreachable: {error}") from error
        if not response.ok:
            raise DeliveryError(f"webhook answered {response.status_code}: {response.text[:200]}")


@dataclass(frozen=True)
class EmailSink:
    """E-mail through an SMTP server: `smtp://[user:password@]host[:port]` (STARTTLS when the
    server offers it; port 25 by default) or `smtps://…` (TLS from the start; port 465)."""

    url: str
    recipients: tuple[str, ...]
    sender: str
    name: str = "email"

    def send(self, alert: Alert) -> None:
        parts = urlsplit(self.url)
        message = EmailMessage()
        message["Subject"] = headline(alert)
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(render_text(alert))
        secure = parts.scheme == "smtps"
        connect = smtplib.SMTP_SSL if secure else smtplib.SMTP
        host, port = parts.hostname or "localhost", parts.port or (465 if secure else 25)
        try:
            with connect(host, port, timeout=TIMEOUT_SECONDS) as smtp:
                smtp.ehlo()
                if not secure and smtp.has_extn("starttls"):
                    smtp.starttls()
                    smtp.ehlo()
                if parts.username:
                    smtp.login(unquote(parts.username), unquote(parts.password or ""))
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as error:
            raise DeliveryError(f"smtp {host}:{port}: {error}") from error


def _email_sink(url: str) -> EmailSink:
    if urlsplit(url).scheme not in ("smtp", "smtps"):
        raise ValueError(f"{config.ALERTS_SMTP_URL} must be smtp://… or smtps://…, not {url!r}")
    recipients = tuple(
        a.strip() for a in (config.env(config.ALERTS_EMAIL_TO) or "").split(",") if a.strip()
    )
    if not recipients:
        raise ValueError(
            f"{config.ALERTS_SMTP_URL} is set: {config.ALERTS_EMAIL_TO} must name "
            "who receives the alerts (comma-separated addresses)"
        )
    sender = config.env(config.ALERTS_EMAIL_FROM) or "billing-pipeline@localhost"
    return EmailSink(url, recipients, sender)


def configured_sinks() -> list[Sink]:
    """The sinks the environment names, in a fixed order; none is a valid setting."""
    sinks: list[Sink] = []
    if url := config.env(config.ALERTS_SLACK_WEBHOOK_URL):
        sinks.append(SlackSink(url))
    if url := config.env(config.ALERTS_WEBHOOK_URL):
        sinks.append(JsonWebhookSink(url))
    if url := config.env(config.ALERTS_SMTP_URL):
        sinks.append(_email_sink(url))
    return sinks


def startup_line(sinks: list[Sink]) -> str:
    """The one line a process says about alerting when it loads the code location."""
    if not sinks:
        return (
            "billing alerts: no sink configured, failed runs and checks are only shown in the "
            f"Dagster UI (set {config.ALERTS_SLACK_WEBHOOK_URL}, {config.ALERTS_WEBHOOK_URL} or "
            f"{config.ALERTS_SMTP_URL})"
        )
    return f"billing alerts: sending to {', '.join(sink.name for sink in sinks)}"


def ui_url() -> str:
    """The Dagster UI's base URL as alert readers reach it, without a trailing slash."""
    return (config.env(config.DAGSTER_UI_URL) or DEFAULT_UI_URL).rstrip("/")

"""What an alert says: what failed, the days and customers affected, and a link to the run.

One `Alert` is rendered three ways: plain text (e-mail-like, and the demo's printout), a Slack
incoming-webhook payload (`text` as the notification fallback, Block Kit `blocks` for the
channel), and a generic JSON document for any other webhook.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

# Slack refuses a section text over 3000 characters; alerts stay far shorter.
DETAILS_SHOWN = 1500
NAMES_SHOWN = 20


@dataclass(frozen=True)
class Alert:
    """One failure, as every sink receives it.

    `key` names the failure deterministically (`run/<run id>`, `check/<event id>`): the
    delivery table is keyed by it, so one failure is one message per sink.
    """

    key: str
    kind: str  # "run" or "check"
    title: str  # what failed, in one line
    severity: str  # "error" or "warning"
    run_id: str
    run_url: str
    days: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()
    organizations: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    details: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            key: list(value)
            if isinstance(value, tuple)
            else dict(value)
            if key == "extra"
            else value
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            key=data["key"],
            kind=data["kind"],
            title=data["title"],
            severity=data["severity"],
            run_id=data["run_id"],
            run_url=data["run_url"],
            days=tuple(data.get("days", ())),
            customers=tuple(data.get("customers", ())),
            organizations=tuple(data.get("organizations", ())),
            events=tuple(data.get("events", ())),
            details=data.get("details", ""),
            extra=dict(data.get("extra", {})),
        )


def format_days(days: Sequence[str]) -> str:
    """Days as inclusive ranges of consecutive UTC days: `2026-12-01 to 2026-12-03 (3 days)`."""
    parsed = sorted({date.fromisoformat(d) for d in days})
    runs: list[tuple[date, date]] = []
    for day in parsed:
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return ", ".join(
        f"{first}" if first == last else f"{first} to {last} ({(last - first).days + 1} days)"
        for first, last in runs
    )


def _names(values: Iterable[str]) -> str:
    shown = list(values)
    more = len(shown) - NAMES_SHOWN
    return ", ".join(shown[:NAMES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def facts(alert: Alert) -> list[tuple[str, str]]:
    """The alert's labelled lines, in the order every rendering shows them."""
    lines = [(label, value) for label, value in alert.extra.items()]
    if alert.days:
        lines.append(("Days", format_days(alert.days)))
    if alert.customers:
        lines.append(("Customers", _names(alert.customers)))
    if alert.organizations:
        lines.append(("Organizations", _names(alert.organizations)))
    if alert.events:
        lines.append(("Stripe events", _names(alert.events)))
    lines.append(("Run", alert.run_url))
    return lines


def _shortened(details: str) -> str:
    return details if len(details) <= DETAILS_SHOWN else details[: DETAILS_SHOWN - 1] + "…"


def headline(alert: Alert) -> str:
    return f"[billing {alert.severity}] {alert.title}"


def render_text(alert: Alert) -> str:
    """Plain text: the headline, one `Label: value` line per fact, then the details."""
    lines = [headline(alert), *(f"{label}: {value}" for label, value in facts(alert))]
    if alert.details:
        lines += ["", _shortened(alert.details)]
    return "\n".join(lines)


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` for notifications, Block Kit for the channel.

    Slack's mrkdwn links are `<url|label>`; the run link is the section's button-like line.
    """
    fields = [
        {"type": "mrkdwn", "text": f"*{label}*\n{value}"}
        for label, value in facts(alert)
        if label != "Run"
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline(alert)[:150]}},
    ]
    # A section holds at most 10 fields.
    for start in range(0, len(fields), 10):
        blocks.append({"type": "section", "fields": fields[start : start + 10]})
    if alert.details:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"```{_shortened(alert.details)}```"},
            }
        )
    blocks.append(
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"<{alert.run_url}|Open the run in Dagster>"},
        }
    )
    return {"text": f"{headline(alert)} ({alert.run_url})", "blocks": blocks}


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """The generic JSON document: every field by name, plus the text rendering."""
    return {**alert.to_json(), "text": render_text(alert)}

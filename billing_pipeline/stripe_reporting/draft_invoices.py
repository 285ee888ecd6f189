"""Draft invoices checked against the source before Stripe finalizes them.

At a period's end Stripe makes a draft invoice (`invoice.created`) and finalizes it when its
`automatically_finalizes_at` comes (1 h later by default, up to 72 h); until then every meter
event received for the period still counts, afterwards nothing does. So each draft of a metered
subscription is looked at while there is time, by a run of `verify_draft_invoice` over the
period's days (the draft sensor, sensors.py): the run recomputes the days' usage from the source
rows and sends what the ledger owes Stripe through the usual planning and sender (identifiers,
revisions and exactly-once as ever), and its check `draft_invoices_verified` then compares each
metered line with the source:

- expected: the attributed source of the line's subscription, meter and period, with the very
  rules of `usage_after_invoice_finalized` (invoice_usage.py: which parts of which days the
  subscription bills, held parts of shared meters counted as its organizations' usage);
- held: what Stripe holds for the line now, its meter's aggregate for the customer over the
  line's period (a summary without grouping window), which is what finalization bills.

Looks: the first as soon as the draft is known; another when a run failed before its check
(a send that kept failing), up to MAX_ATTEMPTS runs; and a last look once the draft is within
LAST_LOOK of finalization, for usage that arrived during the grace period (late readings of a day
computed only while it was in progress are nobody else's until the 02:00 run, which is after
finalization). A line that still differs after the last look's run sent what it could cannot be
made right in time: it is recorded once in `billing.unfixable_draft_lines` (customer, invoice,
line, expected, held) and the check fails naming it, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, text

from billing_pipeline.db.statuses import DraftOutcome
from billing_pipeline.stripe_client import StripeBilling
from billing_pipeline.stripe_reporting.invoice_usage import DRAFT_INVOICES, line_sources
from billing_pipeline.usage.meters import Meter

# The last look at a draft comes this long before Stripe finalizes it: a run (recompute, plan,
# send, compare) takes a minute or two, so a late reading found then still reaches the invoice.
LAST_LOOK = timedelta(minutes=15)
# Runs per draft at most: the first and the last look, and retries of runs that failed before
# their check could compare (a send that kept failing).
MAX_ATTEMPTS = 4
# On a verification run: the draft invoice it looks at, and which look it is.
DRAFT_TAG = "billing/draft_invoice"
ATTEMPT_TAG = "billing/draft_attempt"

_DRAFTS_SQL = """
SELECT i.id, i.automatically_finalizes_at AS finalizes_at,
       to_timestamp(min(CAST(e.l ->> 'start' AS bigint))) AS period_start,
       to_timestamp(max(CAST(e.l ->> 'end' AS bigint))) AS period_end
FROM billing.invoices i CROSS JOIN LATERAL jsonb_array_elements(i.lines) AS e (l)
WHERE i.status = 'draft' AND i.finalized_at IS NULL AND i.stripe_subscription_id IS NOT NULL
  AND i.automatically_finalizes_at IS NOT NULL
  AND e.l ->> 'start' IS NOT NULL AND e.l ->> 'end' IS NOT NULL
  AND (CAST(:invoices AS text[]) IS NULL OR i.id = ANY(:invoices))
  AND (CAST(:now AS timestamptz) IS NULL OR i.automatically_finalizes_at > :now)
GROUP BY i.id, i.automatically_finalizes_at
ORDER BY i.automatically_finalizes_at, i.id
"""

_LATEST_SQL = """
SELECT DISTINCT ON (invoice_id) invoice_id, attempt, outcome, checked_at
FROM billing.draft_verifications
WHERE invoice_id = ANY(:invoices)
ORDER BY invoice_id, attempt DESC
"""


@dataclass(frozen=True)
class Draft:
    """A draft invoice of a subscription, not finalized yet as far as the webhooks tell."""

    invoice: str
    finalizes_at: datetime
    period_start: datetime
    period_end: datetime

    @property
    def first_day(self) -> date:
        return self.period_start.date()

    @property
    def last_day(self) -> date:
        """The day holding the period's last instant (a midnight end: the day before)."""
        return (self.period_end - timedelta(microseconds=1)).date()

    def in_last_look(self, now: datetime) -> bool:
        return now >= self.finalizes_at - LAST_LOOK

    def run_key(self, attempt: int) -> str:
        return f"draft-{self.invoice}-{attempt}"


@dataclass(frozen=True)
class DraftLine:
    """One metered line of a draft: what the source says it must bill, what Stripe holds."""

    invoice: str
    line: int
    customer: str
    subscription: str | None
    meter: str
    period_start: datetime
    period_end: datetime
    expected: int
    held: int


@dataclass(frozen=True)
class Verification:
    """The latest look at a draft."""

    attempt: int
    outcome: DraftOutcome
    checked_at: datetime


def open_drafts(
    engine: Engine, invoices: Sequence[str] | None = None, finalizing_after: datetime | None = None
) -> list[Draft]:
    """Drafts recorded by the webhook flow (those named, else all), optionally only those
    Stripe finalizes after `finalizing_after`."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(_DRAFTS_SQL),
            {"invoices": None if invoices is None else list(invoices), "now": finalizing_after},
        ).all()
    return [Draft(row.id, row.finalizes_at, row.period_start, row.period_end) for row in rows]


def latest_verifications(engine: Engine, invoices: Sequence[str]) -> dict[str, Verification]:
    with engine.connect() as connection:
        rows = connection.execute(text(_LATEST_SQL), {"invoices": list(invoices)}).all()
    return {
        row.invoice_id: Verification(row.attempt, DraftOutcome(row.outcome), row.checked_at)
        for row in rows
    }


def next_attempt(
    draft: Draft,
    launched: int,
    finished: int,
    latest: Verification | None,
    now: datetime,
) -> int | None:
    """The attempt to launch for `draft` now (None: nothing to do), from the runs launched for
    it so far, how many of them finished, and the latest verification recorded."""
    if finished < launched or (latest is not None and latest.outcome == DraftOutcome.UNFIXABLE):
        return None
    if launched == 0:
        return 1
    if launched >= MAX_ATTEMPTS:
        return None
    if latest is None or latest.attempt < launched:
        return launched + 1  # the last run failed before its check compared
    if draft.in_last_look(now) and latest.checked_at < draft.finalizes_at - LAST_LOOK:
        return launched + 1
    return None


def compare_drafts(
    engine: Engine, stripe: StripeBilling, meters: Sequence[Meter], drafts: Sequence[Draft]
) -> list[DraftLine]:
    """Each metered line of `drafts` with its expected (source) and held (Stripe) values."""
    if not drafts:
        return []
    sources = line_sources(
        engine,
        stripe,
        meters,
        DRAFT_INVOICES,
        # A draft's period has ended: every part of it counts.
        {"invoices": [d.invoice for d in drafts], "now": datetime.now(UTC)},
    )
    return [
        DraftLine(
            invoice=s.invoice,
            line=s.line,
            customer=s.customer,
            subscription=s.subscription,
            meter=s.meter.name,
            period_start=s.period_start,
            period_end=s.period_end,
            expected=s.source,
            # Stripe bills a negative aggregate as 0 and whole units.
            held=max(
                0,
                int(
                    stripe.period_total(
                        s.stripe_meter_id,
                        s.customer,
                        _minute(s.period_start),
                        _minute(s.period_end),
                    )
                ),
            ),
        )
        for s in sorted(sources, key=lambda s: (s.invoice, s.line))
    ]


def _minute(at: datetime) -> datetime:
    """Stripe's summaries take instants on minute boundaries only: a period bounded inside a
    minute (a subscription started at 12:03:17) is read from its minute's start, which can
    count the seconds around the boundary in the wrong period (docs/operations.md, 'What
    happens at a period end')."""
    return at.replace(second=0, microsecond=0)


def record_verification(
    engine: Engine,
    draft: Draft,
    attempt: int | None,
    lines: Sequence[DraftLine],
    now: datetime,
) -> tuple[DraftOutcome, list[DraftLine]]:
    """Record this look at `draft` (attempt None: the next number); returns its outcome and
    the lines recorded unfixable by this very look (a line is recorded once)."""
    own = [line for line in lines if line.invoice == draft.invoice]
    gaps = [line for line in own if line.expected != line.held]
    if not gaps:
        outcome = DraftOutcome.VERIFIED
    elif draft.in_last_look(now):
        outcome = DraftOutcome.UNFIXABLE
    else:
        outcome = DraftOutcome.GAP
    recorded: list[DraftLine] = []
    with engine.begin() as connection:
        if outcome == DraftOutcome.UNFIXABLE:
            for line in gaps:
                inserted = connection.execute(
                    text(
                        """
                        INSERT INTO billing.unfixable_draft_lines
                            (invoice_id, line, stripe_customer_id, stripe_subscription_id, meter,
                             period_start, period_end, expected, held, recorded_at)
                        VALUES (:invoice, :line, :customer, :subscription, :meter,
                                :period_start, :period_end, :expected, :held, :now)
                        ON CONFLICT DO NOTHING
                        RETURNING invoice_id
                        """
                    ),
                    {**asdict(line), "now": now},
                ).first()
                if inserted is not None:
                    recorded.append(line)
        connection.execute(
            text(
                """
                INSERT INTO billing.draft_verifications
                    (invoice_id, attempt, outcome, lines_compared, checked_at)
                VALUES (:invoice, coalesce(:attempt, (
                            SELECT coalesce(max(attempt), 0) + 1
                            FROM billing.draft_verifications WHERE invoice_id = :invoice)),
                        :outcome, :compared, :now)
                ON CONFLICT (invoice_id, attempt) DO UPDATE
                SET outcome = EXCLUDED.outcome, lines_compared = EXCLUDED.lines_compared,
                    checked_at = EXCLUDED.checked_at
                """
            ),
            {
                "invoice": draft.invoice,
                "attempt": attempt,
                "outcome": outcome,
                "compared": len(own),
                "now": now,
            },
        )
    return outcome, recorded


def draft_findings(engine: Engine, lines: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """What the looks at each (invoice, line) found while it was a draft, for the finalized
    invoice check: the unfixable record, else the last look's outcome and time."""
    invoices = sorted({invoice for invoice, _ in lines})
    with engine.connect() as connection:
        unfixable = {
            (row.invoice_id, row.line): f"unfixable: expected {row.expected}, held {row.held}"
            for row in connection.execute(
                text(
                    "SELECT invoice_id, line, expected, held FROM billing.unfixable_draft_lines "
                    "WHERE invoice_id = ANY(:invoices)"
                ),
                {"invoices": invoices},
            )
        }
    looks = latest_verifications(engine, invoices)
    found = {}
    for invoice, line in lines:
        look = looks.get(invoice)
        found[(invoice, line)] = unfixable.get((invoice, line)) or (
            f"{look.outcome} at {look.checked_at:%Y-%m-%d %H:%M}" if look else "never looked at"
        )
    return found

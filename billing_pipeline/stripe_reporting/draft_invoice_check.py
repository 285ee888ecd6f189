"""The asset check `draft_invoices_verified`: each draft invoice against the source, before
Stripe finalizes it (draft_invoices.py says how and when).

It runs in `verify_draft_invoice` runs, after `stripe/meter_events` sent what the ledger owed,
and looks at the draft the run's tag names (launched without one, from the UI: every draft
Stripe has not finalized yet). It fails only when a line is recorded unfixable by this very
evaluation, so each such line fails the check once, naming the customer, the invoice, the line,
the expected and the held value; a difference with time left is shown in the metadata and looked
at again at the last look.
"""

from datetime import UTC, datetime

import dagster as dg

from billing_pipeline.db.statuses import DraftOutcome
from billing_pipeline.metadata_tables import markdown_table
from billing_pipeline.resources import PostgresResource, StripeResource
from billing_pipeline.stripe_reporting.assets import REPORTING_KEY
from billing_pipeline.stripe_reporting.checks import without_stripe_key
from billing_pipeline.stripe_reporting.draft_invoices import (
    ATTEMPT_TAG,
    DRAFT_TAG,
    DraftLine,
    compare_drafts,
    open_drafts,
    record_verification,
)
from billing_pipeline.usage.meters import METERS

ROWS_SHOWN = 50


def _named(line: DraftLine) -> str:
    return (
        f"customer {line.customer}: invoice {line.invoice} line {line.line} ({line.meter}, "
        f"{line.period_start:%Y-%m-%d %H:%M}..{line.period_end:%Y-%m-%d %H:%M}) expected "
        f"{line.expected}, Stripe holds {line.held}"
    )


@dg.asset_check(
    asset=REPORTING_KEY,
    name="draft_invoices_verified",
    description=(
        "Compares each metered line of a draft invoice (the one the `verify_draft_invoice` run "
        "was launched for by `draft_invoice_sensor`, or every draft not finalized yet) with the "
        "source for its subscription, meter and period, after the run sent what the ledger "
        "owed; records each look in billing.draft_verifications. Fails (error) when a line "
        "still differs at the last look before Stripe finalizes the draft: the line is "
        "recorded in billing.unfixable_draft_lines and named (customer, invoice, line, "
        "expected, held), once. See docs/operations.md, 'A draft invoice that cannot be made "
        "right'."
    ),
)
def draft_invoices_verified(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, stripe: StripeResource
) -> dg.AssetCheckResult:
    client = stripe.client()
    if client is None:
        return without_stripe_key("draft invoice lines cannot be compared")
    engine = postgres.engine()
    now = datetime.now(UTC)
    tags = context.run.tags
    named = tags.get(DRAFT_TAG)
    attempt = int(tags[ATTEMPT_TAG]) if ATTEMPT_TAG in tags else None
    drafts = open_drafts(engine, [named] if named else None, None if named else now)
    lines = compare_drafts(engine, client, METERS, drafts)
    outcomes: dict[str, DraftOutcome] = {}
    unfixable: list[DraftLine] = []
    for draft in drafts:
        outcome, recorded = record_verification(engine, draft, attempt, lines, now)
        outcomes[draft.invoice] = outcome
        unfixable += recorded
    outcome_of = {line.invoice: outcomes[line.invoice] for line in lines}
    return dg.AssetCheckResult(
        passed=not unfixable,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            None
            if not unfixable
            else "cannot be made right before Stripe finalizes the draft: "
            + "; ".join(_named(line) for line in unfixable[:ROWS_SHOWN])
        ),
        metadata={
            "drafts": dg.MetadataValue.json(sorted(outcomes)),
            "lines_compared": len(lines),
            "lines_with_gap": sum(1 for line in lines if line.expected != line.held),
            "unfixable_lines": len(unfixable),
            "details": markdown_table(
                ("customer", "invoice", "line", "meter", "period", "expected", "held", "outcome"),
                [
                    (
                        line.customer,
                        line.invoice,
                        line.line,
                        line.meter,
                        f"{line.period_start:%Y-%m-%d %H:%M}..{line.period_end:%Y-%m-%d %H:%M}",
                        line.expected,
                        line.held,
                        outcome_of[line.invoice],
                    )
                    for line in lines[:ROWS_SHOWN]
                ],
                numeric=("line", "expected", "held"),
            ),
        },
    )

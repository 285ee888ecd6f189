"""The demo's webhook side: a signing secret that outlives restarts, and a test event worth sending.

A secret generated per start would break every test-webhook command copied from an earlier
terminal; it is created once under the data directory, readable by this user only. The printed
test event targets a demo subscription Stripe (the emulator) really holds, so sending it changes
a row an operator can look at instead of inventing a new subscription.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

from billing_demo.dev.services import ServiceError
from billing_demo.subscriptions import DemoSubscription
from stripe_emulator.webhooks import generate_webhook_secret

SECRET_FILE = "stripe_webhook_secret"
# invoice.payment_failed changes only the payment state. The emulator's
# customer.subscription.updated payload carries a `start_date` of today, which would move the
# subscription's start and with it the first day the organization is billed for.
TEST_EVENT = "invoice.payment_failed"


def persistent_webhook_secret(data_dir: Path) -> str:
    """The demo's `whsec_` secret: read from the data directory, or created there once (0600).

    Written to a private temporary file and linked into place, so two starts racing each other
    agree on one secret and a crash never leaves a half-written one.
    """
    path = data_dir / SECRET_FILE
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".webhook-secret-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_webhook_secret() + "\n")
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    secret = path.read_text().strip()
    if not secret.startswith("whsec_"):
        raise ServiceError(f"{path} does not hold a whsec_… secret; delete it to get a new one")
    return secret


def trigger_command(target: DemoSubscription, url: str, secret: str) -> str:
    """The shell command that sends the test event, wrapped for a terminal."""
    argv = [".venv/bin/billing-pipeline", "stripe-emulator", "trigger", TEST_EVENT]
    lines = [
        " ".join(argv),
        f"--customer {shlex.quote(target.customer)} "
        f"--subscription {shlex.quote(target.subscription)}",
        f"--url {shlex.quote(url)} --secret {shlex.quote(secret)}",
    ]
    return " \\\n      ".join(lines)


def invoices_command() -> str:
    """The shell command that prints Stripe's invoices: like every `billing-pipeline` command,
    it finds the running demo's emulator by itself (`config.setting`)."""
    return ".venv/bin/billing-pipeline stripe invoices [--customer cus_…]"

"""A local, stateful stand-in for the parts of Stripe that billing_pipeline talks to.

Stripe's official stripe-mock is stateless, so it cannot enforce duplicate identifiers, the
35-day window or summaries. This emulator keeps state in memory and speaks Stripe's wire format,
so the official SDK (and therefore the pipeline's real code) can be exercised without an account.
"""

from stripe_emulator.control import EmulatorControl
from stripe_emulator.server import StripeEmulator

__all__ = ["EmulatorControl", "StripeEmulator"]

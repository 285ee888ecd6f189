"""Reporting daily usage to Stripe exactly once: the ledger, the sender and the Dagster asset."""

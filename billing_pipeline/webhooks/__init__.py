"""Stripe webhooks: a verifying receiver, a durable inbox, and the Dagster job that applies it.

Stripe retries, reorders and duplicates deliveries, so the receiver only verifies and stores
(answering 2xx once the row is committed) and all interpretation happens later, in order and
idempotently, in `processing`.
"""

"""billing_pipeline: a Dagster code location that bills IoT sensor usage through Stripe."""

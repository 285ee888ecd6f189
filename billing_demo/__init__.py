"""Demo tooling beside the product: seed data, the `dev` supervisor, Stripe demo subscriptions."""

"""Demo tooling beside the product: seed data, the `dev` supervisor, demo customers."""

"""Deterministic demo data for the application tables (`billing-pipeline seed`).

`generator` decides what the rows are (pure functions of the options), `loader` streams them
into Postgres with COPY, `cli` wires the subcommand. Nothing is imported here so that
`billing-pipeline --help` stays instant.
"""

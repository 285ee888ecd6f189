"""Postgres access: the engine, the embedded server, the schema and its migrations."""

"""`billing-pipeline subscriptions list`: what an operator reads after sending a webhook."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from billing_pipeline.cli import build_parser
from billing_pipeline_tests.support.builders import add_organization


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    args = build_parser().parse_args(argv)
    assert args.handler(args) == 0
    return capsys.readouterr().out.splitlines()


def test_lists_subscriptions_as_an_aligned_table(
    engine: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_organization(engine, 1, customer="cus_one")
    add_organization(engine, 12, customer="cus_twelve")
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE subscriptions SET payment_status = 'payment_failed' WHERE id = 2")
        )
    monkeypatch.setenv("DATABASE_URL", database_url)

    header, _, *rows = run(["subscriptions", "list"], capsys)

    assert header.split()[:4] == ["id", "org", "status", "payment"]
    assert len(rows) == 2
    assert rows[0].split()[:4] == ["1", "1", "active", "-"]
    assert rows[1].split()[:4] == ["2", "12", "active", "payment_failed"]
    assert "cus_twelve" in rows[1] and "2024-01-01 00:00:00Z" in rows[1]
    # Columns line up: every cell of a column starts where its heading does.
    customer_at = header.index("customer")
    assert all(row[customer_at:].startswith("cus_") for row in rows)

    _, _, *only = run(["subscriptions", "list", "--organization-id", "12"], capsys)
    assert [row.split()[1] for row in only] == ["12"]

"""A receiver served over real HTTP against the test database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from billing_pipeline.webhooks.app import create_app
from billing_pipeline_tests.support.webhooks import OLD_SECRET, SECRET, serve


@pytest.fixture
def receiver(engine: Engine, database_url: str) -> Iterator[str]:
    """Base URL of a receiver accepting the current and the previous secret (a rotation)."""
    with serve(create_app(database_url, [SECRET, OLD_SECRET], max_body_bytes=64 * 1024)) as url:
        yield url

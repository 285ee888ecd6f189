"""The code location loads: what `dagster dev` and the webserver do first, checked in a second."""

from __future__ import annotations

import dagster as dg

from billing_pipeline.definitions import defs


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)


def test_every_job_and_asset_resolves() -> None:
    repository = defs.get_repository_def()
    for job in repository.get_all_jobs():
        assert job.name
    assert repository.asset_graph is not None

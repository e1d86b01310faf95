"""The report tests' run folders, written once per module."""

import pytest
from _runs import write_response_run, write_score_run


@pytest.fixture(scope="module")
def seed_runs(kokorochat, tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    return [write_score_run(root / f"seed_{s}", kokorochat, s, more_baselines=True) for s in range(5)]


@pytest.fixture(scope="module")
def response_runs(kokorochat, tmp_path_factory):
    root = tmp_path_factory.mktemp("response")
    return [write_response_run(root / s, kokorochat, s, baselines=s == "high") for s in ("low", "high")]

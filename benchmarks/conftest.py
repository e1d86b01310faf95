"""Shared benchmark fixtures: the real data and the default tiny backbone (built once, cached)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def kokorochat():
    from kokorozoo.data import load_kokorochat

    return load_kokorochat()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what decides this machine's speed (see benchmarks/machine.py) in every saved run."""
    from machine import describe, machine_key

    facts = describe()
    machine_info["kokorozoo"] = {**facts, "key": machine_key(facts)}

"""The example plugin in plugins/kokorozoo-topic, installed into the test environment (``pip install
-e plugins/kokorozoo-topic``; nox does it): discovered like any plugin, its classes usable by short
name in a config. Its own tests (training, metrics, checkpoints) are in plugins/kokorozoo-topic/tests."""

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from kokorozoo.cli import main
from kokorozoo.registry import discover_tasks

pytest.importorskip(
    "kokorozoo_topic", reason="the example plugin is not installed: pip install -e plugins/kokorozoo-topic"
)

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "kokorozoo-topic"


def test_the_installed_plugin_is_this_checkouts():
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    assert version(project["name"]) == project["version"]  # not a stale install
    [(name, target)] = project["entry-points"]["kokorozoo.tasks"].items()
    entry = discover_tasks()[name]
    assert entry.ok and (entry.target, entry.distribution) == (target, project["name"])
    assert not entry.is_core and entry.class_name == "TopicTask"


def test_plugin_config_resolves_short_class_names(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(PLUGIN / "configs" / "topic.yaml"), "--print_config"])
    assert stop.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["class_path"] == "kokorozoo_topic.TopicTask"
    assert cfg["data"]["class_path"] == "kokorozoo_topic.TopicDataModule"
    assert cfg["model"]["init_args"]["backbone"] == "tiny"

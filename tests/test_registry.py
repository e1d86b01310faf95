"""Task discovery: plugins found through entry points, a plugin that shadows a core task, a plugin
that fails to import. Each test installs throwaway plugin distributions (a package and its
``*.dist-info`` with ``entry_points.txt``) into a folder put on ``sys.path``, and removes them after."""

import gc
import json
import sys
import textwrap
from importlib.metadata import version

import pytest

from kokorozoo.cli import main
from kokorozoo.registry import RegistryError, discover_tasks, scan_tasks

GOOD = """
from kokorozoo.tasks.base import Task


class EchoTask(Task):
    '''A plugin task.'''

    def __init__(self, loudness: int = 1, **kwargs):
        super().__init__(**kwargs)
"""

CORE = f"kokorozoo {version('kokorozoo')}"

CONFIG = """
model:
  class_path: {task}
  init_args:
    warmup_steps: 3
data:
  class_path: ResponseDataModule
trainer:
  accelerator: cpu
"""


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """``install_plugin(dist, {entry: target}, {module: source})``: a plugin distribution on sys.path."""
    import kokorozoo.registry

    monkeypatch.setattr(kokorozoo.registry, "_reported", set())  # warn afresh about broken plugins
    modules: list[str] = []

    def install(dist: str, tasks: dict[str, str], sources: dict[str, str], version: str = "0.3.1"):
        site = tmp_path / f"site-{dist}"
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "\n".join(f"{name} = {target}" for name, target in tasks.items())
        (info / "entry_points.txt").write_text(f"[kokorozoo.tasks]\n{lines}\n")
        for module, source in sources.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            modules.append(module)
        monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
        return site

    yield install
    for module in modules:
        sys.modules.pop(module, None)
    gc.collect()  # forget the plugin classes, so Task.__subclasses__() is as before


def config(tmp_path, task: str):
    path = tmp_path / f"{task}.yaml"
    path.write_text(CONFIG.format(task=task))
    return str(path)


def print_config(args, capsys) -> dict:
    import yaml

    with pytest.raises(SystemExit) as stop:
        main([*args, "--print_config"])
    assert stop.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


# -- discovery ------------------------------------------------------------------------------


def test_core_tasks_are_registered_by_kokorozoo():
    tasks = discover_tasks()
    response = tasks["response"]
    assert response.ok and response.is_core and response.distribution == "kokorozoo"
    assert response.class_name == "ResponseTask" and response.target == "kokorozoo.tasks.response:ResponseTask"
    core_first = [e.is_core for e in scan_tasks()]
    assert core_first == sorted(core_first, reverse=True)


def test_plugin_is_discovered_with_its_distribution(install_plugin, capsys):
    install_plugin("kokorozoo-echo", {"echo": "echo_plugin:EchoTask"}, {"echo_plugin": GOOD})
    entry = discover_tasks()["echo"]
    assert entry.ok and not entry.is_core
    assert (entry.distribution, entry.version, entry.class_name) == ("kokorozoo-echo", "0.3.1", "EchoTask")
    assert entry.cls.__module__ == "echo_plugin"

    assert main(["tasks"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "CLASS", "PROVIDED", "BY", "STATUS"]
    [row] = [line for line in table if line.startswith("echo ")]
    assert row.split() == ["echo", "EchoTask", "kokorozoo-echo", "0.3.1", "ok"]
    [core] = [line for line in table if line.startswith("response ")]
    assert core.split()[1:] == ["ResponseTask", *CORE.split(), "ok"]

    assert main(["tasks", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["echo"] == {
        "name": "echo",
        "class": "EchoTask",
        "class_path": "echo_plugin.EchoTask",
        "distribution": "kokorozoo-echo",
        "version": "0.3.1",
        "core": False,
        "status": "ok",
        "error": None,
        "conflict": None,
    }


def test_plugin_class_name_works_in_a_config(install_plugin, tmp_path, capsys):
    install_plugin("kokorozoo-echo", {"echo": "echo_plugin:EchoTask"}, {"echo_plugin": GOOD})
    cfg = print_config(["fit", "--config", config(tmp_path, "EchoTask"), "--model.init_args.loudness=3"], capsys)
    assert cfg["model"]["class_path"] == "echo_plugin.EchoTask"
    assert cfg["model"]["init_args"]["loudness"] == 3 and cfg["model"]["init_args"]["warmup_steps"] == 3


def test_the_same_registration_seen_twice_is_one_task(install_plugin, tmp_path):
    """An editable install can put a distribution's metadata on the path twice."""
    install_plugin("kokorozoo-echo", {"echo": "echo_plugin:EchoTask"}, {"echo_plugin": GOOD})
    install_plugin("kokorozoo-echo", {"echo": "echo_plugin:EchoTask"}, {}, version="0.3.0")
    assert [e.name for e in scan_tasks()].count("echo") == 1
    assert discover_tasks()["echo"].ok


# -- shadowing ------------------------------------------------------------------------------

SHADOW = (
    "task 'response' (evil_plugin:EvilTask) of kokorozoo-evil 0.3.1 would shadow the core task 'response' "
    f"(kokorozoo.tasks.response:ResponseTask) of {CORE}: the name 'response' is taken; rename its entry point in "
    "kokorozoo-evil or uninstall it"
)


def test_plugin_cannot_shadow_a_core_task_name(install_plugin, tmp_path, capsys):
    never_imported = "raise SystemExit('imported')"
    install_plugin("kokorozoo-evil", {"response": "evil_plugin:EvilTask"}, {"evil_plugin": never_imported})
    with pytest.raises(RegistryError) as error:
        discover_tasks()
    assert str(error.value) == SHADOW
    assert "evil_plugin" not in sys.modules  # a shadowing plugin is never imported

    # `kokorozoo tasks` still shows the table, marks the plugin, and fails with the one line
    assert main(["tasks"]) == 2
    out, err = capsys.readouterr()
    [row] = [line for line in out.splitlines() if "kokorozoo-evil" in line]
    assert row.split()[:2] == ["response", "EvilTask"]
    assert row.endswith(f"error: shadows the core task 'response' of {CORE}")
    assert [line for line in out.splitlines() if line.startswith("response ") and "ok" in line]  # the core one
    assert err == f"kokorozoo: error: {SHADOW}\n"

    # and so does every Lightning command, before parsing anything
    assert main(["fit", "--config", config(tmp_path, "ResponseTask"), "--print_config"]) == 2
    assert capsys.readouterr().err == f"kokorozoo: error: {SHADOW}\n"


def test_plugin_cannot_shadow_a_core_class_name(install_plugin, tmp_path, capsys):
    """Configs name tasks by class: a second ``ResponseTask`` would make every response config
    ambiguous, so it is shadowing too, even under another entry-point name."""
    source = "from kokorozoo.tasks.base import Task\n\nclass ResponseTask(Task):\n    pass\n"
    install_plugin("kokorozoo-copycat", {"copycat": "copycat_plugin:ResponseTask"}, {"copycat_plugin": source})
    with pytest.raises(RegistryError, match="class name 'ResponseTask' is taken") as error:
        discover_tasks()
    message = str(error.value)
    assert "task 'copycat' (copycat_plugin:ResponseTask) of kokorozoo-copycat 0.3.1" in message
    assert f"the core task 'response' (kokorozoo.tasks.response:ResponseTask) of {CORE}" in message
    assert main(["fit", "--config", config(tmp_path, "ResponseTask"), "--print_config"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "kokorozoo-copycat" in err[0] and CORE in err[0]


def test_two_plugins_cannot_share_a_name(install_plugin):
    install_plugin("kokorozoo-echo", {"echo": "echo_plugin:EchoTask"}, {"echo_plugin": GOOD})
    install_plugin("kokorozoo-zecho", {"echo": "zecho_plugin:EchoTask"}, {"zecho_plugin": GOOD})
    with pytest.raises(RegistryError) as error:
        discover_tasks()
    assert str(error.value).startswith(
        "task 'echo' (zecho_plugin:EchoTask) of kokorozoo-zecho 0.3.1 would shadow the task 'echo' "
        "(echo_plugin:EchoTask) of kokorozoo-echo 0.3.1"
    )


# -- broken plugins -------------------------------------------------------------------------


def test_broken_plugin_is_reported_and_the_rest_works(install_plugin, tmp_path, capsys, caplog):
    install_plugin(
        "kokorozoo-broken",
        {"broken": "broken_plugin:BrokenTask", "notatask": "broken_plugin_ok:helper"},
        {"broken_plugin": "import no_such_dependency_xyz\n", "broken_plugin_ok": "def helper():\n    pass\n"},
    )
    install_plugin("kokorozoo-echo", {"echo": "echo_plugin:EchoTask"}, {"echo_plugin": GOOD})
    tasks = discover_tasks()
    broken = tasks["broken"]
    assert broken.cls is None and broken.error == "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"
    assert tasks["notatask"].error == "TypeError: broken_plugin_ok:helper is not a kokorozoo Task subclass"
    assert tasks["echo"].ok and tasks["response"].ok
    assert "task 'broken' (broken_plugin:BrokenTask) of kokorozoo-broken 0.3.1 could not be loaded" in caplog.text
    assert "No module named 'no_such_dependency_xyz'" in caplog.text

    assert main(["tasks"]) == 0  # reported, not fatal
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith("broken ")]
    assert row.split()[:4] == ["broken", "BrokenTask", "kokorozoo-broken", "0.3.1"]
    assert row.endswith("error: ModuleNotFoundError: No module named 'no_such_dependency_xyz'")

    # Lightning commands still run, with core and working plugin tasks alike
    assert print_config(["fit", "--config", config(tmp_path, "ResponseTask")], capsys)["model"]["class_path"] == (
        "kokorozoo.tasks.ResponseTask"
    )
    assert print_config(["fit", "--config", config(tmp_path, "EchoTask")], capsys)["model"]["class_path"] == (
        "echo_plugin.EchoTask"
    )

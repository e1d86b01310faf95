"""Model folders and checkpoints from elsewhere: each malformed part is one line naming the file
and the field (exit 2), and nothing the files name is imported unless it is a registered task.
Every broken folder is a real tiny export with one part broken."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kokorozoo.cli import main
from kokorozoo.tasks.model_files import ModelFileError, read_model


def _json(path: Path, change) -> None:
    content = json.loads(path.read_text(encoding="utf-8"))
    change(content)
    path.write_text(json.dumps(content), encoding="utf-8")


def _info(change):
    return lambda folder: _json(folder / "kokorozoo.json", change)


def _adapter(change):
    return lambda folder: _json(folder / "adapter_config.json", change)


def _write(name: str, text: str):
    return lambda folder: (folder / name).write_text(text, encoding="utf-8")


def _pickled_adapter(folder: Path) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(folder / "adapter_model.safetensors"), folder / "adapter_model.bin")
    (folder / "adapter_model.safetensors").unlink()


def _wrong_rank(folder: Path) -> None:
    _json(folder / "adapter_config.json", lambda c: c.update(r=c["r"] * 2))


def _pickled_backbone(tmp: Path):
    def breaks(folder: Path) -> None:
        backbone = tmp / "backbone"
        backbone.mkdir()
        (backbone / "config.json").write_text("{}", encoding="utf-8")
        torch.save({"weight": torch.zeros(1)}, backbone / "pytorch_model.bin")
        _json(folder / "kokorozoo.json", lambda c: c["settings"].update(backbone=str(backbone)))

    return breaks


def _other_heads(folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3, 3)}, folder / "score_heads.safetensors")


#: id -> (how the scorer's export is broken, the file and field the one line must name).
BROKEN_FOLDERS = {
    "info not JSON": (_write("kokorozoo.json", "{task: nope"), "kokorozoo.json: not valid JSON"),
    "info a list": (_write("kokorozoo.json", "[1, 2]"), "kokorozoo.json: expected a JSON object, got a list"),
    "no task": (_info(lambda c: c.pop("task")), "kokorozoo.json: task: missing"),
    "no settings": (_info(lambda c: c.pop("settings")), "kokorozoo.json: settings: missing"),
    "settings a list": (_info(lambda c: c.update(settings=[])), "kokorozoo.json: settings: expected a mapping"),
    "unknown setting": (
        _info(lambda c: c["settings"].update(lr_typo=1)),
        "kokorozoo.json: settings.lr_typo: not a setting of ScoreHeadsTask",
    ),
    "max_length a string": (
        _info(lambda c: c["prompt"].update(max_length="384")),
        "kokorozoo.json: prompt.max_length: expected an integer, got a string ('384')",
    ),
    "lr a string": (_info(lambda c: c["settings"].update(lr="fast")), "kokorozoo.json: settings.lr: expected a number"),
    "unknown LoRA field": (
        _info(lambda c: c["settings"]["lora"].update(rank=8)),
        "kokorozoo.json: settings.lora.rank: not a field of LoraSettings",
    ),
    "task os.system": (
        _info(lambda c: c.update(task="os.system")),
        "kokorozoo.json: task: 'os.system' is not a registered task",
    ),
    "task empty": (_info(lambda c: c.update(task="")), "kokorozoo.json: task: expected a task's class path, got ''"),
    "task a module": (
        _info(lambda c: c.update(task="this.Foo")),
        "kokorozoo.json: task: 'this.Foo' is not a registered",
    ),
    "unknown peft_type": (
        _adapter(lambda c: c.update(peft_type="PROMPT_TUNING")),
        "adapter_config.json: peft_type: 'PROMPT_TUNING': kokorozoo reads LoRA adapters ('LORA') only",
    ),
    "rank not the weights'": (_wrong_rank, "adapter_config.json: r: 16 does not match the weights"),
    "adapter pickled": (_pickled_adapter, "adapter_model.bin: the adapter is saved as a pickle (.bin)"),
    "heads not safetensors": (
        _write("score_heads.safetensors", "not tensors"),
        "score_heads.safetensors: not a safetensors file",
    ),
    "heads outside the folder": (
        _info(lambda c: c["heads"].update(file="../heads.safetensors")),
        "kokorozoo.json: heads.file: expected a file name inside the folder",
    ),
    "no heads entry": (_info(lambda c: c.pop("heads")), "kokorozoo.json: heads: missing"),
}


@pytest.fixture
def broken(exports, tmp_path):
    """A copy of the scorer's export, to break."""

    def copy() -> Path:
        folder = tmp_path / "scorer"
        shutil.copytree(exports["scorer"], folder)
        return folder

    return copy


@pytest.mark.parametrize("case", BROKEN_FOLDERS, ids=list(BROKEN_FOLDERS))
def test_a_broken_model_folder_is_one_line_naming_the_file_and_field(case, broken, exports, capsys):
    """`kokorozoo chat MODEL --rate SCORER` checks the scorer before loading anything."""
    breaks, expected = BROKEN_FOLDERS[case]
    folder = broken()
    breaks(folder)
    capsys.readouterr()
    assert main(["chat", str(exports["counselor"]), "--rate", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"kokorozoo: error: {folder}"), err
    assert expected in err, err


def test_a_backbone_saved_as_a_pickle_is_refused(broken, tmp_path):
    folder = broken()
    _pickled_backbone(tmp_path)(folder)
    with pytest.raises(ModelFileError, match=r"kokorozoo.json: settings.backbone: .*pytorch_model.bin: the backbone"):
        read_model(folder)


def test_heads_that_are_not_the_tasks_are_one_line_when_loaded(broken):
    folder = broken()
    _other_heads(folder)
    record = read_model(folder)  # a valid safetensors file: its tensors are checked when the heads load
    with pytest.raises(ModelFileError, match=r"score_heads.safetensors: heads: not this task's heads"):
        record.build()


def test_the_task_a_folder_names_is_never_imported(broken, tmp_path):
    """A fresh process: the module a folder names stays unimported (``this`` prints the Zen of Python
    when imported, ``antigravity`` opens a browser)."""
    folder = broken()
    _json(folder / "kokorozoo.json", lambda c: c.update(task="antigravity.Fly"))
    probe = (
        "import sys\nfrom kokorozoo.tasks.model_files import ModelFileError, read_model\n"
        f"try:\n    read_model({str(folder)!r})\nexcept ModelFileError as e:\n    print(e)\n"
        "print('imported' if 'antigravity' in sys.modules or 'webbrowser' in sys.modules else 'not imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "'antigravity.Fly' is not a registered task" in out
    assert out.strip().endswith("not imported"), out


def test_a_plugin_task_is_read_through_the_registry(exports):
    """The registered tasks are found by their class path (the core ones here; the topic plugin's
    own export test reads its folder the same way)."""
    from kokorozoo.tasks.score import ScoreHeadsTask

    assert read_model(exports["scorer"]).task is ScoreHeadsTask


# -- checkpoints ---------------------------------------------------------------------------------


def _checkpoint(exports) -> Path:
    [ckpt] = exports["scorer"].parent.glob("lightning_logs/version_*/checkpoints/last.ckpt")
    return ckpt


BROKEN_CHECKPOINTS = {
    "task a module": (
        lambda s: s["kokorozoo"].update(task="this.Foo"),
        "kokorozoo.task: 'this.Foo' is not a registered",
    ),
    "task not a string": (lambda s: s["kokorozoo"].update(task=3), "kokorozoo.task: expected a task's class path"),
    "unknown setting": (
        lambda s: s["hyper_parameters"].update(lr_typo=1),
        "hyper_parameters.lr_typo: not a setting of ScoreHeadsTask",
    ),
    "prompt a string": (lambda s: s["kokorozoo"].update(prompt="x"), "kokorozoo.prompt: expected a mapping"),
    "no state_dict": (lambda s: s.pop("state_dict"), "state_dict: missing"),
}


@pytest.mark.parametrize("case", BROKEN_CHECKPOINTS, ids=list(BROKEN_CHECKPOINTS))
def test_a_broken_checkpoint_is_one_line_for_export(case, exports, tmp_path, capsys):
    breaks, expected = BROKEN_CHECKPOINTS[case]
    saved = torch.load(_checkpoint(exports), map_location="cpu", weights_only=True)
    breaks(saved)
    ckpt = tmp_path / "broken.ckpt"
    torch.save(saved, ckpt)
    capsys.readouterr()
    assert main(["export", str(ckpt), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"kokorozoo: error: {ckpt}: {expected}"), err
    assert not (tmp_path / "out").exists()  # nothing written for a checkpoint that cannot be used


@pytest.mark.parametrize("keyword", ["hpc", "registry"])
def test_lightnings_checkpoint_keywords_are_one_line(keyword, tmp_path, capsys):
    config = str(Path(__file__).parents[2] / "configs" / "score_heads.yaml")
    args = ["test", "--config", config, f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={keyword}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--ckpt_path {keyword}: give a checkpoint file" in err, err


def test_test_refuses_an_export_folder_as_its_checkpoint(exports, tmp_path, capsys):
    config = str(Path(__file__).parents[2] / "configs" / "score_heads.yaml")
    args = ["test", "--config", config, f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={exports['scorer']}"]
    assert main(args) == 2
    assert "an export folder; give a checkpoint file (.ckpt)" in capsys.readouterr().err

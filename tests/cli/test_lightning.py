"""``kokorozoo fit|validate|test|predict`` on top of LightningCLI: what a checkpoint may change,
and a bad setting said in one line (the runs themselves: tests/test_first_hour.py,
test_long_runs.py, test_several_processes.py and the tasks' tests)."""

from pathlib import Path

import pytest
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from kokorozoo.cli import LIGHTNING_COMMANDS, main
from kokorozoo.cli.lightning import _reading_settings

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "score.yaml")


def test_the_dispatcher_sends_lightnings_own_commands_to_it():
    assert set(LIGHTNING_COMMANDS) == set(LightningCLI.subcommands())


def test_a_checkpoint_keeps_its_reading_settings_unless_the_user_gives_other_ones():
    path = "kokorozoo.tasks.score.ScoreTask"
    defaults = Namespace(scoring="greedy", max_new_tokens=160, lr=1e-3, output_dir=None)
    assert _reading_settings(path, defaults) == {"output_dir": None}  # the checkpoint's values stay
    given = Namespace(scoring="constrained", max_new_tokens=8, lr=5e-3, output_dir="out")
    assert _reading_settings(path, given) == {"output_dir": "out", "scoring": "constrained", "max_new_tokens": 8}


@pytest.mark.parametrize(
    "setting, words",
    [
        ("--trainer.max_stepz=3", ["unrecognized arguments: --trainer.max_stepz=3"]),
        ("--trainer.max_steps=abc", ['"trainer.max_steps"', "int", "abc"]),
        ("--model.init_args.lr_typo=1", ['"model"', "lr_typo", "not accepted"]),
    ],
)
def test_a_bad_setting_is_its_key_and_the_reason_in_one_line(setting, words, capsys):
    assert main(["fit", "--config", CONFIG, setting]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("kokorozoo: error: ") and all(word in line for word in words), line
    assert line.count("unrecognized") <= 1 and "Subtypes" not in line and "Given value" not in line

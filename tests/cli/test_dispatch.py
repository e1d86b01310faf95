"""The ``kokorozoo`` dispatcher and what every command shares."""

import subprocess
import sys

import pytest

from kokorozoo.cli import COMMANDS, build_parser, main
from kokorozoo.cli.common import output_folder
from kokorozoo.errors import UsageError


def test_every_command_is_listed_once_lightnings_first(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    shown = capsys.readouterr().out
    names = [
        line.split()[0]
        for line in shown.split("COMMAND\n", 1)[1].split("\n\n")[0].splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    ]
    assert names == ["fit", "validate", "test", "predict", "data", "export", "tasks", "report", "chat", "simulate", "serve",
                     "baseline", "seeds"]  # fmt: skip
    assert len(COMMANDS) + 4 == len(names)
    assert "KOKOROCHAT_ROOT" in shown and "PL_*" in shown  # the environment a run reads, and what it does not


def test_help_and_the_light_commands_import_neither_torch_nor_lightning():
    code = (
        "import sys; from kokorozoo.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'lightning', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_command_prints_the_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "fit, validate, test and predict take a config" in capsys.readouterr().out


def test_python_m_kokorozoo_cli_is_the_command():
    result = subprocess.run([sys.executable, "-m", "kokorozoo.cli", "seeds"], capture_output=True, text=True)
    assert result.returncode == 2 and "one of the arguments --config --aggregate is required" in result.stderr


def test_an_output_folder_is_never_written_over_unless_asked(tmp_path):
    assert output_folder(tmp_path / "new", overwrite=False) == tmp_path / "new"
    assert output_folder(tmp_path, overwrite=False) == tmp_path  # empty
    (tmp_path / "earlier.html").write_text("")
    with pytest.raises(UsageError, match="not empty.*--overwrite"):
        output_folder(tmp_path, overwrite=False)
    assert output_folder(tmp_path, overwrite=True) == tmp_path
    with pytest.raises(UsageError, match="not a folder"):
        output_folder(tmp_path / "earlier.html", overwrite=True)

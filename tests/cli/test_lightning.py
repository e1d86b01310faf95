"""``kokorozoo fit|validate|test|predict`` on top of LightningCLI: what a checkpoint may change,
and a bad setting said in one line (the runs themselves: tests/test_first_hour.py,
test_long_runs.py, test_several_processes.py and the tasks' tests)."""

import json
from pathlib import Path

import pytest
import yaml
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


def test_a_tracker_from_the_config_keeps_runs_apart(short_fit_args, tmp_path, capsys):
    """A tracker's logger named in the config (here TensorBoard into one shared folder, as MLflow's
    ./mlruns is) gets every run's figures, while each run keeps its own folder with its config,
    metrics.json, predictions and CSV/TensorBoard logs: a second run never overwrites the first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shared = tmp_path / "tracker"
    tracker = ("--trainer.logger=TensorBoardLogger", f"--trainer.logger.save_dir={shared}",
               "--trainer.logger.name=", "--trainer.logger.version=shared")  # fmt: skip
    runs = []
    for seed in (0, 1):
        args = short_fit_args("score_heads.yaml", tmp_path / "runs", *tracker, f"--seed_everything={seed}")
        assert main(args) == 0
        runs.append(sorted((tmp_path / "runs" / "lightning_logs").iterdir())[-1])
    assert runs[0] != runs[1]
    for run, seed in zip(runs, (0, 1)):
        assert {"config.yaml", "metrics.json", "predictions.jsonl", "metrics.csv"} <= {p.name for p in run.iterdir()}
        assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
        assert f"seed_everything: {seed}" in (run / "config.yaml").read_text()
    assert not (shared / "shared" / "metrics.json").exists() and not (shared / "metrics.json").exists()
    events = EventAccumulator(str(shared / "shared"))
    events.Reload()
    assert {"test_acc", "test_baseline_acc", "train_loss"} <= set(events.Tags()["scalars"])


def test_a_tracker_that_cannot_be_built_is_one_line(short_fit_args, tmp_path, capsys, monkeypatch):
    import lightning.pytorch.loggers.mlflow as mlflow_logger

    monkeypatch.setattr(mlflow_logger, "_MLFLOW_AVAILABLE", False)  # as where mlflow is not installed
    args = short_fit_args("score_heads.yaml", tmp_path, "--trainer.logger=MLFlowLogger")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "kokorozoo: error: lightning.pytorch.loggers.MLFlowLogger cannot be built:"
    )


@pytest.fixture
def trackers(tmp_path, monkeypatch):
    """A config adding MLflow (a file store) and W&B (offline) trackers, both under ``tmp_path``."""
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for a database otherwise
    loggers = [
        {"class_path": "MLFlowLogger", "init_args": {"tracking_uri": f"file:{tmp_path / 'mlruns'}"}},
        {"class_path": "WandbLogger", "init_args": {"save_dir": str(tmp_path / "wandb"), "offline": True}},
    ]
    path = tmp_path / "trackers.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"logger": loggers}}))
    yield path
    import wandb

    wandb.finish()  # the run's process-wide state, for the tests after this one


def test_every_tracker_gets_the_figures_and_the_result_files(short_fit_args, tmp_path, trackers):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main([*short_fit_args("score_heads.yaml", tmp_path / "runs"), "--config", str(trackers)]) == 0
    [run] = (tmp_path / "runs" / "lightning_logs").iterdir()
    written = json.loads((run / "metrics.json").read_text())

    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
    [experiment] = [e for e in client.search_experiments() if e.name == "lightning_logs"]
    [mlflow_run] = client.search_runs([experiment.experiment_id])
    assert {"metrics.json", "predictions.jsonl"} <= {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
    report = {a.path for a in client.list_artifacts(mlflow_run.info.run_id, "report")}
    assert "report/report.html" in report and any(p.endswith(".png") for p in report)  # the report's figures
    assert mlflow_run.data.metrics["test_acc"] == pytest.approx(written["metrics"]["acc"])

    [wandb_run] = (tmp_path / "wandb" / "wandb").glob("offline-run-*")
    saved = wandb_run / "files"
    assert json.loads((saved / "metrics.json").read_text()) == written and (saved / "predictions.jsonl").is_file()
    assert (saved / "report" / "report.html").is_file() and list((saved / "report").glob("*.png"))

    events = EventAccumulator(str(run), size_guidance={"tensors": 0})
    events.Reload()
    [text] = events.Tensors("metrics.json/text_summary")
    assert json.loads(text.tensor_proto.string_val[0].decode()) == written  # indented JSON is still JSON


def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "uri, words",
    [
        ("nosuch://tracker", ["lightning.pytorch.loggers.MLFlowLogger cannot be built:", "nosuch"]),  # at start-up
        (f"http://127.0.0.1:{unused_port()}", ["MLFlowLogger failed:", "127.0.0.1"]),  # when it first logs
    ],
)
def test_a_tracker_that_fails_is_one_line(uri, words, short_fit_args, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection fails at once
    args = short_fit_args("score_heads.yaml", tmp_path, "--trainer.logger=MLFlowLogger")
    assert main([*args, f"--trainer.logger.tracking_uri={uri}"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("kokorozoo: error: ") and all(word in line for word in words), line


def test_a_tracker_failing_at_the_end_keeps_the_results(short_fit_args, tmp_path, trackers, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MlflowClient, "log_artifact", full)
    assert main([*short_fit_args("score_heads.yaml", tmp_path / "runs"), "--config", str(trackers)]) == 2
    err = capsys.readouterr().err  # in pytest, Lightning's and the libraries' log lines come here too
    assert err.strip().splitlines()[-1] == "kokorozoo: error: MLFlowLogger failed: [Errno 28] No space left on device"
    assert "Traceback" not in err
    [run] = (tmp_path / "runs" / "lightning_logs").iterdir()
    assert {"metrics.json", "predictions.jsonl", "metrics.csv", "config.yaml"} <= {p.name for p in run.iterdir()}
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_a_saved_config_runs_again_with_what_the_run_used_in_a_new_folder(short_fit_args, tmp_path, monkeypatch):
    """config.yaml lists the loggers and callbacks kokorozoo added; fit --config of it builds the
    same ones (none twice) and writes a new run folder beside the first, which stays as it was."""
    from kokorozoo.cli.lightning import KokorozooCLI

    built = []
    fit = KokorozooCLI.before_fit
    monkeypatch.setattr(KokorozooCLI, "before_fit", lambda self: built.append(self.trainer) or fit(self))
    root = tmp_path / "runs"
    assert main(short_fit_args("score_heads.yaml", root, "--test_after_fit=false")) == 0
    first = root / "lightning_logs" / "version_0"
    saved = listed(first / "config.yaml")
    assert saved == (["ResultWriter", "ModelCheckpoint", "LastCheckpoint", "LearningRateMonitor"],
                     ["CSVLogger", "TensorBoardLogger"])  # fmt: skip
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}

    assert main(["fit", "--config", str(first / "config.yaml")]) == 0
    kinds = [([type(c) for c in t.callbacks], [type(x) for x in t.loggers]) for t in built]
    assert kinds[0] == kinds[1]
    assert sorted(p.name for p in (root / "lightning_logs").iterdir()) == ["version_0", "version_1"]
    second = root / "lightning_logs" / "version_1"
    assert {"config.yaml", "metrics.csv", "hparams.yaml"} <= {p.name for p in second.iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in second.iterdir())
    assert [p.name for p in (second / "checkpoints").iterdir()] and built[1].log_dir == str(second)
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    assert listed(second / "config.yaml") == saved


def listed(config: Path) -> tuple[list[str], list[str]]:
    """The callbacks and loggers a saved config lists, by class."""
    trainer = yaml.safe_load(config.read_text())["trainer"]
    return tuple([c["class_path"].rpartition(".")[2] for c in trainer[key]] for key in ("callbacks", "logger"))

"""The result writer on stand-ins for the trainer and the task, in milliseconds: rows gathered
across processes in rank order, the run's facts in the result, the output folder, the files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

import kokorozoo.evaluation.writer as writer_module
from kokorozoo.evaluation.baselines import RunBaselines
from kokorozoo.evaluation.writer import ResultWriter, evaluate, gather_rows, output_folder, write_jsonl

pytestmark = pytest.mark.mutation  # fast enough to run per mutant


class Task(SimpleNamespace):
    """What the writer asks of a task."""

    predictions_file = "predictions.jsonl"

    def __init__(self, output_dir=None, zero_shot=False):
        super().__init__(hparams={"output_dir": output_dir, "lr": 0.1}, zero_shot=zero_shot, logged={})

    def test_figures(self, rows):
        return {"task": "stand-in", "dialogues": len(rows), "metrics": {"acc": 50.0}}

    def log_dict(self, values):
        self.logged.update(values)


def trainer(tmp_path, **facts):
    defaults = {"world_size": 1, "is_global_zero": True, "log_dir": str(tmp_path / "logs" / "version_0"),
                "datamodule": None, "loggers": [], "ckpt_path": None, "global_step": 0}  # fmt: skip
    return SimpleNamespace(**{**defaults, **facts})


def test_rows_of_several_processes_come_in_rank_order(tmp_path, monkeypatch):
    def all_gather_object(gathered, rows):
        assert gathered == [[], [], []]
        gathered[:] = [[{"rank": 0}], rows, [{"rank": 2}]]

    monkeypatch.setattr("torch.distributed.all_gather_object", all_gather_object)
    here = [{"rank": 1}, {"rank": 1.5}]
    assert gather_rows(trainer(tmp_path, world_size=3), here) == [{"rank": 0}, {"rank": 1}, {"rank": 1.5}, {"rank": 2}]
    assert gather_rows(trainer(tmp_path), here) is here


def test_the_result_holds_the_checkpoint_the_zero_shot_mark_and_every_baselines_columns(tmp_path, monkeypatch):
    per_item = {"acc": [1.0] * 20}
    monkeypatch.setattr(
        "kokorozoo.evaluation.baselines.run_baselines",
        lambda task, dm, rows, tokenize: RunBaselines(figures={"baseline": {"acc": 25.0, "per_item": per_item}}),
    )
    task = Task(zero_shot=True)
    tensorboard = TensorBoardLogger(tmp_path)
    hparams = []
    monkeypatch.setattr(tensorboard, "log_hyperparams", lambda params, metrics: hparams.append((params, metrics)))
    run = trainer(tmp_path, ckpt_path="runs/best.ckpt", loggers=[CSVLogger(tmp_path), tensorboard])
    result = evaluate(run, task, [{"id": 1}, {"id": 2}])
    assert (result.checkpoint, result.zero_shot, result.dialogues) == ("runs/best.ckpt", True, 2)
    assert result.per_item == {"baseline": per_item} and result.baselines == {"baseline": {"acc": 25.0}}
    assert task.logged == {"test_acc": 50.0, "test_baseline_acc": 25.0}
    assert hparams == [(task.hparams, task.logged)]  # TensorBoard's HParams: the settings beside the figures


def test_the_output_folder_is_the_tasks_then_the_runs_then_here(tmp_path, monkeypatch):
    nested = tmp_path / "a" / "b"
    assert output_folder(trainer(tmp_path), Task(output_dir=str(nested))) == nested and nested.is_dir()
    assert output_folder(trainer(tmp_path), Task()) == tmp_path / "logs" / "version_0"
    assert (tmp_path / "logs" / "version_0").is_dir()
    monkeypatch.chdir(tmp_path)
    assert output_folder(trainer(tmp_path, log_dir=None), Task()) == writer_module.Path(".")


def test_jsonl_is_utf8_japanese_one_row_a_line_and_leaves_no_temporary_file(tmp_path):
    path = write_jsonl(tmp_path / "generations.jsonl", [{"generation": "こんにちは"}, {"generation": "はい"}])
    assert path.read_bytes() == '{"generation": "こんにちは"}\n{"generation": "はい"}\n'.encode()
    assert [p.name for p in tmp_path.iterdir()] == ["generations.jsonl"]


def test_predict_writes_its_rows_into_the_runs_folder(tmp_path):
    writer, task, run = ResultWriter(), Task(), trainer(tmp_path)
    writer.on_predict_epoch_start(run, task)
    writer.on_predict_batch_end(run, task, [{"id": 1}], None, 0)
    writer.on_predict_batch_end(run, task, None, None, 1)
    writer.on_predict_batch_end(run, task, [{"id": 2}], None, 2)
    writer.on_predict_epoch_end(run, task)
    rows = (tmp_path / "logs" / "version_0" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(r) for r in rows] == [{"id": 1}, {"id": 2}]


def test_test_writes_rows_and_metrics_into_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("kokorozoo.evaluation.baselines.run_baselines", lambda *args: RunBaselines())
    writer, task, run = ResultWriter(), Task(), trainer(tmp_path)
    writer.on_test_epoch_start(run, task)
    writer.on_test_batch_end(run, task, [{"id": 1}], None, 0)
    writer.on_test_epoch_end(run, task)
    folder = tmp_path / "logs" / "version_0"
    assert json.loads((folder / "metrics.json").read_text())["metrics"] == {"acc": 50.0}
    assert (folder / "predictions.jsonl").read_text() == '{"id": 1}\n'


@pytest.mark.parametrize("rank", [0, 1])
def test_only_the_first_process_gives_the_result_files_to_the_trackers(rank, tmp_path, monkeypatch):
    """The others never touch a tracker (nor wait on anything) at the end of a test."""
    monkeypatch.setattr("kokorozoo.evaluation.baselines.run_baselines", lambda *args: RunBaselines())
    given = []
    monkeypatch.setattr(writer_module, "log_result_files", lambda loggers, files, step=0: given.append(files))
    writer, task, run = ResultWriter(), Task(), trainer(tmp_path, is_global_zero=rank == 0)
    writer.on_test_epoch_start(run, task)
    writer.on_test_epoch_end(run, task)
    folder = tmp_path / "logs" / "version_0"
    assert given == ([[folder / "metrics.json", folder / "predictions.jsonl"]] if rank == 0 else [])

"""ClassificationTask's test path on given logits, in milliseconds: the rows, the figures against
sklearn's, the constant baseline, and the head's description."""

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from kokorozoo.tasks.classification import ClassificationTask

pytestmark = pytest.mark.mutation  # fast enough to run per mutant


class Colours(ClassificationTask):
    labels = ("red", "green", "blue")
    label_field = "colour"
    task_name = "colours"


GOLD = torch.tensor([0, 1, 2, 2, 1, 0, 2])
LOGITS = torch.tensor([[3.0, 0, 0], [0, 2, 1], [0, 1, 2], [1, 0, 0], [0, 0, 5], [0, 4, 0], [0, 0, 1]])


def batches():
    ids = [f"d{i}" for i in range(len(GOLD))]
    for lo, hi in ((0, 4), (4, 7)):
        yield {"dialogue_ids": ids[lo:hi], "labels": GOLD[lo:hi]}, LOGITS[lo:hi]


def test_rows_name_the_gold_and_predicted_labels_with_probabilities():
    task = Colours()
    rows = [row for batch, logits in batches() for row in task.prediction_rows(batch, logits)]
    assert [r["dialogue_id"] for r in rows] == [f"d{i}" for i in range(7)]
    assert [r["colour"] for r in rows] == [task.labels[i] for i in GOLD]
    assert [r["predicted"] for r in rows] == [task.labels[i] for i in LOGITS.argmax(-1)]
    assert list(rows[0]) == ["dialogue_id", "colour", "predicted", "probabilities"]
    for row, p in zip(rows, LOGITS.softmax(-1)):
        assert list(row["probabilities"]) == list(task.labels)
        assert list(row["probabilities"].values()) == [round(v, 6) for v in p.tolist()]  # 6 decimals
    unlabelled = task.prediction_rows({"dialogue_ids": ["x"]}, LOGITS[:1])  # predict: no gold
    assert list(unlabelled[0]) == ["dialogue_id", "predicted", "probabilities"]


def test_figures_are_sklearns_and_the_metrics_start_afresh():
    task = Colours()
    pred = LOGITS.argmax(-1)
    for _ in range(2):  # a second test of the same task sees its own batches only
        rows = []
        for batch, logits in batches():
            task.update_test_metrics(batch, logits)
            rows += task.prediction_rows(batch, logits)
        figures = task.test_figures(rows)
        assert (figures["task"], figures["dialogues"]) == ("colours", 7)
        assert figures["metrics"]["acc"] == pytest.approx(accuracy_score(GOLD, pred), abs=1e-6)
        assert figures["metrics"]["macro_f1"] == pytest.approx(f1_score(GOLD, pred, average="macro"), abs=1e-6)
        per_label = f1_score(GOLD, pred, average=None)
        assert figures["extra"] == {"per_colour_f1": pytest.approx(dict(zip(task.labels, per_label)), abs=1e-6)}


@pytest.mark.parametrize("majority", [0, 2])
def test_the_constant_baseline_answers_the_majority_label(majority):
    task = Colours()
    rows = [row for batch, logits in batches() for row in task.prediction_rows(batch, logits)]
    figures = task.score_constant(torch.tensor(majority), rows)
    constant = torch.full_like(GOLD, majority)
    assert figures == {
        "predicts": task.labels[majority],
        "acc": pytest.approx(accuracy_score(GOLD, constant), abs=1e-6),
        "macro_f1": pytest.approx(f1_score(GOLD, constant, average="macro"), abs=1e-6),
    }


def test_the_head_is_described_by_its_labels_and_a_task_needs_two():
    assert Colours().head_description() == {
        "reads": "the final hidden state of the dialogue's last token (attention_mask's last 1)",
        "logits": "weight @ hidden + bias, one per label (3)",
        "colours": ["red", "green", "blue"],
    }
    assert Colours.monitor == "val_macro_f1" and Colours.mode == "max"

    class One(ClassificationTask):
        labels = ("only",)

    class Two(ClassificationTask):
        labels = ("yes", "no")

    with pytest.raises(TypeError, match="One.labels must name at least two labels"):
        One()
    assert Two().labels == ("yes", "no")


def test_the_head_reads_the_last_token_through_dropout_only_when_asked(monkeypatch):
    task = Colours()
    assert task.dropout.p == 0.0 and Colours(head_dropout=0.5).dropout.p == 0.5
    hidden = torch.randn(2, 4)
    monkeypatch.setattr(task, "last_token_states", lambda ids, mask: hidden)
    task.head = torch.nn.Linear(4, 3)
    task.train()  # no dropout by default, even in training
    expected = task.head(hidden)
    torch.testing.assert_close(task.infer({"input_ids": None, "attention_mask": None}), expected)


def test_validation_logs_loss_and_metrics(monkeypatch):
    task = Colours()
    logged = {}
    monkeypatch.setattr(task, "infer", lambda batch: LOGITS)
    monkeypatch.setattr(task, "log", lambda name, value, **kw: logged.update({name: float(value)}))
    monkeypatch.setattr(task, "log_dict", lambda values, **kw: logged.update(values))
    task.validation_step({"labels": GOLD}, 0)
    assert logged["val_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(LOGITS, GOLD)))
    assert set(logged) == {"val_loss", "val_acc", "val_macro_f1"}
    assert float(task.val_metrics["acc"].compute()) == pytest.approx(accuracy_score(GOLD, LOGITS.argmax(-1)))

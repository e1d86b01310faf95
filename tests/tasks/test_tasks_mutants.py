"""The tasks' test paths in seconds (issue 17): a real Lightning ``Trainer.test`` of each task on a
tiny in-memory Llama (or a stubbed generator), with a small datamodule, then every number of the
report and every row of the file checked against the references of ``tests/_references.py``.

The end-to-end runs (tests/test_reported_numbers.py) check the same on real fits; these are small
enough for the mutation session to run per mutant, and they choose their data so that each rule
is exercised: predictions off by 0, 1, 2 and more, invalid answers, a tie in the baseline's mode,
left-padded prompts of different lengths, Japanese text with 4-gram overlaps.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _references import (
    OWN_RULE,
    reference_by_rule,
    reference_modes,
    reference_scores,
    reference_text_metrics,
    score_arrays,
)
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from kokorozoo.data import ITEM_NAMES
from kokorozoo.data.datamodules import GenerationRequest, ResponseDataModule, ScoreDataModule, ScoreSample, collate_scores
from kokorozoo.evaluation.writer import ResultWriter
from kokorozoo.data.score_format import format_scores, parse_scores
from kokorozoo.tasks import ResponseTask, ScoreHeadsTask, ScoreTask

PAD = 0
TOL = 1e-6


def tiny_llama(dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         pad_token_id=PAD)  # fmt: skip
    return LlamaForCausalLM(config).to(dtype).eval()


SEED = 7


class _Data:
    """A test part of ``samples`` in batches of 2, a training part of ``train`` gold scores (for
    the mode baseline) and split ``seed``; ``data`` and ``whole_split`` name the samples'
    dialogues for the baselines that read them (stubbed in these tests)."""

    def __init__(self, samples, collate, train=None, seed=SEED, **settings):
        super().__init__(seed=seed, **settings)
        self.test_samples, self.collate_batch, self.train = samples, collate, train
        self.dialogues = [SimpleNamespace(id=s.dialogue_id) for s in samples]

    @property
    def data(self):
        return SimpleNamespace(dialogues=self.dialogues, by_id=lambda: {d.id: d for d in self.dialogues})

    def whole_split(self):
        return SimpleNamespace(train=self.dialogues[:1], val=self.dialogues[1:2], test=self.dialogues)

    def train_labels(self):
        return None if self.train is None else torch.tensor(self.train)

    def setup(self, stage=None):
        pass

    def test_dataloader(self):
        return DataLoader(self.test_samples, batch_size=2, collate_fn=self.collate_batch)


class ScoreData(_Data, ScoreDataModule):
    pass


class ResponseData(_Data, ResponseDataModule):
    pass


def trainer(tmp_path, accelerator="cpu") -> Trainer:
    return Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                   callbacks=[ResultWriter()])  # fmt: skip


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- score prediction ---------------------------------------------------------------------------

#: Gold scores of six test dialogues (every level 0-5 occurs in every item).
GOLD = [[(i + d) % 6 for i in range(20)] for d in range(6)]
#: A training part whose per-item modes are known: item 0 ties 1 and 4 (the smaller, 1, wins),
#: the others' mode is 3 (4 in item 1), so the baseline is off by 0, 1, 2 and more on GOLD.
TRAIN = [[1] + [4] + [3] * 18, [1] + [4] + [3] * 18, [4] + [4] + [3] * 18, [4] + [0] + [3] * 18, [5] * 20]
TRAIN_MODES = [1, 4] + [3] * 18


def score_samples(lengths=(5, 9, 4, 7, 6, 8)):
    """Six dialogues whose prompts differ in length (batches are left-padded) and in tokens."""
    generator = torch.Generator().manual_seed(1)
    samples = []
    for d, (length, gold) in enumerate(zip(lengths, GOLD)):
        prompt = torch.randint(1, 64, (length,), generator=generator).tolist()
        samples.append(ScoreSample(f"d{d}", prompt + [PAD, PAD], [-100] * length + [1, 2], length, gold))
    return samples


def collate(samples):
    return collate_scores(samples, PAD)


#: The non-neural baseline's distributions for the six test dialogues, as the stub below gives them.
CLASSICAL = torch.softmax(torch.randn(6, 20, 6, generator=torch.Generator().manual_seed(5)) * 2, -1)


@pytest.fixture(autouse=True)
def classical_baseline(monkeypatch):
    """The score baseline stands in with CLASSICAL (it is fitted and tested in tests/evaluation);
    the task must hand it its split and the tested dialogues, in order."""
    calls = []

    def distribution(split, dialogues):
        calls.append((split, [d.id for d in dialogues]))
        return CLASSICAL[: len(dialogues)]

    monkeypatch.setattr("kokorozoo.evaluation.baselines.score_baseline_distribution", distribution)
    return calls


def check_sections(report: dict, logged: dict, sections) -> None:
    """``(section, per-item prefix, logged prefix, per-item values)``: each figure of the report,
    its per-item columns and its logged value."""
    assert list(report["per_item"]) == list(ITEM_NAMES)
    for section, prefix, log, values in sections:
        for key in ("acc", "acc_soft", "mae"):
            assert report[section][key] == pytest.approx(float(values[key].mean()), abs=TOL), (section, key)
            assert logged[f"{log}_{key}"] == pytest.approx(report[section][key], abs=1e-4)  # logged as float32
            per_item = [report["per_item"][name][f"{prefix}{key}"] for name in ITEM_NAMES]
            np.testing.assert_allclose(per_item, values[key], rtol=0, atol=TOL, err_msg=f"{prefix}{key}")


def check_score_report(report: dict, rows: list[dict], logged: dict, task_name: str) -> None:
    """The report and the logged figures against numpy on the rows, the mode baseline on TRAIN,
    the non-neural baseline on CLASSICAL, each metric under its own rule."""
    assert report["task"] == task_name and report["seed"] == SEED and report["dialogues"] == len(rows) == 6
    assert [r["dialogue_id"] for r in rows] == [f"d{d}" for d in range(6)] and [r["gold"] for r in rows] == GOLD
    gold, pred = score_arrays(rows)
    model = reference_scores(gold, pred)
    assert report["baseline"]["modes"] == dict(zip(ITEM_NAMES, TRAIN_MODES))
    assert reference_modes(np.array(TRAIN)).tolist() == TRAIN_MODES
    baseline = reference_scores(gold, np.broadcast_to(np.array(TRAIN_MODES, dtype=float), gold.shape))
    classical = reference_by_rule(gold, CLASSICAL.numpy())
    check_sections(report, logged, [("metrics", "", "test", model), ("baseline", "baseline_", "baseline", baseline),
                                    ("classical", "classical_", "classical", classical)])  # fmt: skip
    assert report["rules"]["classical"] == OWN_RULE and report["rules"]["baseline"] == "the per-item mode"
    np.testing.assert_allclose([r["classical_distribution"] for r in rows], CLASSICAL.numpy(), rtol=0, atol=1e-6)
    assert report["split"] == "random"
    invalid = int(np.isnan(pred).sum())
    assert report["metrics"]["invalid"] == invalid and logged["test_invalid"] == invalid
    assert set(report["metrics"]) == {"acc", "acc_soft", "mae", "invalid"}


def test_heads_test_path_reports_what_their_logits_imply(tmp_path, classical_baseline):
    model = tiny_llama()
    task = ScoreHeadsTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path))
    task.model = model
    task.configure_heads(type("Backbone", (), {"model": model})())
    torch.nn.init.normal_(task.heads.weight, std=3.0)  # spread the levels the heads choose
    samples = score_samples()
    data = ScoreData(samples, collate, TRAIN, split_kind="client_disjoint")
    [logged] = trainer(tmp_path).test(task, datamodule=data, verbose=False)
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    report = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert report.pop("split") == "client_disjoint"
    report["split"] = "random"  # as check_score_report expects of the others

    # the logits recomputed here: each prompt's final hidden state at its last token, then the heads
    batch = collate(samples)
    task.eval()  # Trainer.test gives the module back in training mode
    ids, mask = batch["prompt"]["input_ids"], batch["prompt"]["attention_mask"]
    assert mask[:, 0].sum() < len(samples) and mask[:, -1].all()  # left-padded
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        logits = torch.nn.functional.linear(hidden.last_hidden_state[:, -1], task.heads.weight, task.heads.bias)
        logits = logits.view(len(samples), 20, 6)
        torch.testing.assert_close(task.item_logits(batch["prompt"]), logits, atol=1e-5, rtol=1e-5)
    assert [r["predicted"] for r in rows] == logits.argmax(-1).tolist()
    distributions = np.array([r["distribution"] for r in rows])
    np.testing.assert_allclose(distributions, logits.softmax(-1).numpy(), rtol=0, atol=1e-5)
    assert all("generation" not in r for r in rows)
    check_sections(report, logged, [("by_rule", "by_rule_", "by_rule", reference_by_rule(np.array(GOLD), distributions))])
    assert report["rules"]["by_rule"] == OWN_RULE and report["rules"]["metrics"].startswith("argmax")
    [(split, tested)] = classical_baseline  # fitted on the datamodule's split, for the tested dialogues
    assert tested == [f"d{d}" for d in range(6)] and [d.id for d in split.train] == ["d0"]
    # the run exercises every rule: predictions off by 0, 1, 2 and more
    gold, pred = score_arrays(rows)
    assert {0, 1, 2, 3} <= set(np.minimum(np.abs(pred - gold), 3).astype(int).ravel().tolist())
    check_score_report(report, rows, logged, "score-heads")


def test_heads_read_a_bfloat16_backbone_in_float32():
    model = tiny_llama(torch.bfloat16)
    task = ScoreHeadsTask(quantization="none", compute_dtype="bfloat16", lora=None, head_dropout=0.5)
    task.model = model
    task.configure_heads(type("Backbone", (), {"model": model})())
    prompt = collate(score_samples())["prompt"]
    task.eval()
    with torch.no_grad():
        logits = task.item_logits(prompt)
        assert logits.dtype == torch.float32 and logits.shape == (6, 20, 6)
        assert torch.equal(task.item_logits(prompt), logits)  # no dropout at test time
        task.train()
        assert not torch.equal(task.item_logits(prompt), logits)  # dropout on the heads' input in training


#: Raw dialogue statistics of the six test dialogues and of a training part (8 each).
STATISTICS = torch.rand(6, 8, generator=torch.Generator().manual_seed(3)) * 1000
TRAIN_STATISTICS = torch.rand(5, 8, generator=torch.Generator().manual_seed(4)) * 1000


def test_heads_read_the_statistics_standardised_on_the_training_part():
    model = tiny_llama()
    task = ScoreHeadsTask(quantization="none", compute_dtype="float32", lora=None, features="statistics")
    task.model = model
    task.configure_heads(type("Backbone", (), {"model": model})())
    assert task.heads.in_features == 16 + 8
    task._standardise_on(TRAIN_STATISTICS)
    logged = np.log1p(TRAIN_STATISTICS.numpy().astype(np.float64))
    np.testing.assert_allclose(task.statistics_mean.numpy(), logged.mean(0), rtol=1e-5)
    np.testing.assert_allclose(task.statistics_scale.numpy(), logged.std(0), rtol=1e-4)  # population std
    torch.nn.init.normal_(task.heads.weight, std=3.0)
    samples = [ScoreSample(s.dialogue_id, s.input_ids, s.labels, s.prompt_length, s.scores, tuple(stats.tolist()))
               for s, stats in zip(score_samples(), STATISTICS)]  # fmt: skip
    batch = collate(samples)
    torch.testing.assert_close(batch["statistics"], STATISTICS)
    task.eval()
    ids, mask = batch["prompt"]["input_ids"], batch["prompt"]["attention_mask"]
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        standardised = (np.log1p(STATISTICS.numpy().astype(np.float64)) - logged.mean(0)) / logged.std(0)
        inputs = torch.cat([hidden.last_hidden_state[:, -1], torch.tensor(standardised, dtype=torch.float32)], -1)
        expected = torch.nn.functional.linear(inputs, task.heads.weight, task.heads.bias).view(6, 20, 6)
        torch.testing.assert_close(task.item_logits(batch["prompt"], batch["statistics"]), expected, atol=1e-4, rtol=1e-4)
        predicted, rows = task.infer(batch)
    assert predicted.tolist() == expected.argmax(-1).float().tolist()
    np.testing.assert_allclose([r["distribution"] for r in rows], expected.softmax(-1).numpy(), rtol=0, atol=1e-5)
    with pytest.raises(ValueError) as error:
        task.item_logits(batch["prompt"])
    assert str(error.value) == "features: statistics needs the dialogues' statistics (batch['statistics'])"


class CharTokenizer:
    """One token a character (ids 1..14), as the answer form needs: each digit its own token."""

    VOCAB = {c: i + 1 for i, c in enumerate("D0123456789: \n")}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.VOCAB[c] for c in text]}


def test_constrained_test_path_reports_the_digits_distributions(tmp_path):
    """One forward over each left-padded prompt and the answer form written with the training
    modes; each item's distribution is the LM's softmax over the six digits at its value position."""
    model = tiny_llama()
    task = ScoreTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path),
                     scoring="constrained")  # fmt: skip
    task.model, task._tokenizer = model, CharTokenizer()
    samples = score_samples()
    [logged] = trainer(tmp_path).test(task, datamodule=ScoreData(samples, collate, TRAIN), verbose=False)
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    report = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))

    answer = CharTokenizer()(format_scores(TRAIN_MODES))["input_ids"]  # the form, at the training modes
    assert task.answer_form().ids == answer
    values = [i for i, c in enumerate(format_scores(TRAIN_MODES)) if c.isdigit() and format_scores(TRAIN_MODES)[i - 1] == " "]
    digits = [CharTokenizer.VOCAB[str(level)] for level in range(6)]
    expected = []
    with torch.no_grad():
        for sample in samples:  # each prompt alone, unpadded
            logits = model(input_ids=torch.tensor([sample.prompt_ids + answer])).logits[0]
            at = torch.tensor(values) + sample.prompt_length - 1
            expected.append(logits[at][:, digits].softmax(-1))
    expected = torch.stack(expected)
    distributions = np.array([r["distribution"] for r in rows])
    np.testing.assert_allclose(distributions, expected.numpy(), rtol=0, atol=1e-5)
    assert [r["predicted"] for r in rows] == expected.argmax(-1).tolist()
    assert all("generation" not in r for r in rows) and report["metrics"]["invalid"] == 0
    check_sections(report, logged, [("by_rule", "by_rule_", "by_rule", reference_by_rule(np.array(GOLD), distributions))])
    assert report["rules"]["metrics"].startswith("argmax of the six digits") and report["rules"]["by_rule"] == OWN_RULE
    check_score_report(report, rows, logged, "score")


#: Text answers: whole and right, whole and off by one or two, cut short, unreadable, repeated
#: with a conflict: parsed to integers with None where an item is invalid.
ANSWERS = [
    format_scores(GOLD[0]),
    format_scores([min(g + 1, 5) for g in GOLD[1]]),
    format_scores([max(g - 2, 0) for g in GOLD[2]]),
    "\n".join(format_scores(GOLD[3]).splitlines()[:7]),
    "I cannot rate this dialogue.",
    format_scores(GOLD[5]) + "\nD4: 0",
]


@pytest.mark.parametrize(
    "accelerator", ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
)
def test_text_test_path_reports_what_its_answers_parse_to(tmp_path, accelerator):
    task = ScoreTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path))
    task.model = torch.nn.Linear(1, 1)  # the answers below stand in for generation
    samples, prompts = score_samples(), []
    answers = iter([ANSWERS[:2], ANSWERS[2:4], ANSWERS[4:]])
    task.generate = lambda prompt: prompts.append(prompt) or next(answers)
    [logged] = trainer(tmp_path, accelerator).test(task, datamodule=ScoreData(samples, collate, TRAIN), verbose=False)
    for prompt, i in zip(prompts, (0, 2, 4)):  # each batch's left-padded prompts are what is answered
        expected = collate(samples[i : i + 2])["prompt"]
        assert all(torch.equal(prompt[k].cpu(), expected[k]) for k in ("input_ids", "attention_mask"))
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    assert [r["generation"] for r in rows] == ANSWERS
    for row in rows:
        assert row["predicted"] == [None if math.isnan(v) else int(v) for v in parse_scores(row["generation"])]
    assert rows[0]["predicted"] == GOLD[0] and rows[3]["predicted"][7:] == [None] * 13
    assert rows[4]["predicted"] == [None] * 20 and rows[5]["predicted"][3] is None
    report = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    check_score_report(report, rows, logged, "score")
    assert report["metrics"]["invalid"] == 13 + 20 + 1
    assert "by_rule" not in report and "by_rule" not in report["rules"]  # a text answer has no distribution


def test_score_test_needs_the_training_scores_for_its_baseline(tmp_path):
    task = ScoreTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path))
    task.model = torch.nn.Linear(1, 1)
    task.generate = lambda prompt: ANSWERS[:2]
    message = r"^ScoreTask is tested with a ScoreDataModule \(for the baseline\)$"
    with pytest.raises(RuntimeError, match=message):
        task.on_test_epoch_start()  # no trainer at all
    with pytest.raises(RuntimeError, match=message):
        trainer(tmp_path).test(task, datamodule=ScoreData(score_samples()[:2], collate), verbose=False)


def test_heads_validation_scores_their_argmax(tmp_path):
    """The figures that choose the best checkpoint (val_acc ...) are the test's, on the validation part."""
    model = tiny_llama()
    task = ScoreHeadsTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path))
    task.model = model
    task.configure_heads(type("Backbone", (), {"model": model})())
    torch.nn.init.normal_(task.heads.weight, std=3.0)
    samples = score_samples()
    data = ScoreData(samples, collate, TRAIN)
    data.val_dataloader = data.test_dataloader
    [logged] = trainer(tmp_path).validate(task, datamodule=data, verbose=False)
    task.eval()
    with torch.no_grad():
        pred = task.item_logits(collate(samples)["prompt"]).argmax(-1).double().numpy()
    expected = reference_scores(np.array(GOLD, dtype=float), pred)
    for key in ("acc", "acc_soft", "mae"):
        assert logged[f"val_{key}"] == pytest.approx(float(expected[key].mean()), abs=1e-4), key
    assert logged["val_invalid"] == 0 and logged["val_loss"] > 0


def test_heads_report_by_rule_for_a_single_dialogue(tmp_path):
    model = tiny_llama()
    task = ScoreHeadsTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path))
    task.model = model
    task.configure_heads(type("Backbone", (), {"model": model})())
    trainer(tmp_path).test(task, datamodule=ScoreData(score_samples()[:1], collate, TRAIN), verbose=False)
    report = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert report["dialogues"] == 1 and set(report["by_rule"]) == {"acc", "acc_soft", "mae"}


# -- response generation ---------------------------------------------------------------------------

#: (generation, reference): Japanese counselor turns with word 4-grams in common, and one with none.
PAIRS = [
    ("  お仕事が大変だったのですね。よく頑張ってこられましたね。\n", "お仕事が大変だったのですね。今日はどんなことをお話ししたいですか？"),
    ("そうなんですね。ご家族とのことで悩んでいらっしゃるのですね。", "ご家族とのことで悩んでいらっしゃるのですね。詳しく教えていただけますか。"),
    ("ありがとうございます。", "お話しくださってありがとうございます。"),
    ("それはつらかったですね。", "明日も来てください。"),
    ("今日はどんなことをお話ししたいですか？", "今日はどんなことをお話ししたいですか？"),
]


def response_requests():
    return [GenerationRequest(f"r{i}", 2 * i + 1, i + 1, [1, 2, 3 + i], ref) for i, (_, ref) in enumerate(PAIRS)]


#: What the two response baselines answer, stubbed (they are tested in tests/evaluation).
RESPONSE_BASELINES = {
    "copy_previous": [r for _, r in PAIRS[1:]] + ["ありがとうございます。"],
    "retrieval": [g for g, _ in reversed(PAIRS)],
}


@pytest.mark.parametrize("tokenize", ["mecab", "char"])
def test_response_test_path_reports_what_its_generations_score(tmp_path, tokenize, monkeypatch):
    asked = []

    def response_baselines(train, targets):
        asked.append(([d.id for d in train], [(d.id, t) for d, t in targets]))
        return RESPONSE_BASELINES

    monkeypatch.setattr("kokorozoo.evaluation.baselines.response_baselines", response_baselines)
    task = ResponseTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path),
                        metrics_tokenize=tokenize, max_new_tokens=11, min_new_tokens=3)  # fmt: skip
    task.model = torch.nn.Linear(1, 1)
    calls = []

    def generate_text(prompts, max_new_tokens, min_new_tokens=0, shared_prefix=False):
        calls.append((prompts, max_new_tokens, min_new_tokens, shared_prefix))
        start = sum(len(c[0]) for c in calls[:-1])
        return [g for g, _ in PAIRS[start : start + len(prompts)]]

    task.generate_text = generate_text
    requests = response_requests()
    data = ResponseData(requests, lambda batch: {"requests": list(batch)})
    [logged] = trainer(tmp_path).test(task, datamodule=data, verbose=False)
    assert [c[0] for c in calls] == [[r.prompt_ids for r in requests[i : i + 2]] for i in (0, 2, 4)]
    assert all(c[1:] == (11, 3, True) for c in calls)  # the model's decoding settings, shared prefixes

    rows = read_jsonl(tmp_path / "generations.jsonl")
    assert rows == [
        {"dialogue_id": r.dialogue_id, "turn_index": r.turn_index, "history_turns": r.history_turns,
         "reference": r.reference, "generation": g.strip(),
         "baselines": {name: texts[i] for name, texts in RESPONSE_BASELINES.items()}}
        for i, (r, (g, _)) in enumerate(zip(requests, PAIRS))
    ]  # fmt: skip
    report = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert (report["task"], report["turns"], report["tokenize"]) == ("response", len(PAIRS), tokenize)
    expected = reference_text_metrics([r["generation"] for r in rows], [r["reference"] for r in rows], tokenize)
    assert set(report["metrics"]) == set(expected)
    for key, value in expected.items():
        assert report["metrics"][key] == pytest.approx(value, abs=TOL), key
        assert logged[key] == pytest.approx(value, abs=1e-4), key  # logged as float32
    assert expected["bleu4"] > 0 and expected["bleu3"] != expected["bleu4"]
    # the baselines, scored the same way on the same references
    assert asked == [(["r0"], [(r.dialogue_id, r.turn_index) for r in requests])]
    assert set(report["baselines"]) == set(RESPONSE_BASELINES) and report["split"] == "random"
    for name, texts in RESPONSE_BASELINES.items():
        expected = reference_text_metrics(texts, [r.reference for r in requests], tokenize)
        for key, value in expected.items():
            assert report["baselines"][name][key] == pytest.approx(value, abs=TOL), (name, key)
            assert logged[f"{name}_{key}"] == pytest.approx(value, abs=1e-4), (name, key)


def test_response_generation_mode_is_passed_and_checked():
    task = ResponseTask(quantization="none", lora=None, generation="generate")
    calls = []
    task.generate_text = lambda prompts, *args: calls.append(args) or [" a "] * len(prompts)
    assert task.infer({"requests": response_requests()[:2]}) == ["a", "a"]
    assert calls == [(256, 0, False)]  # the defaults, one padded generate call
    with pytest.raises(ValueError, match="generation must be one of shared_prefix, generate"):
        ResponseTask(generation="sample")


def response_test(tmp_path, monkeypatch, **settings) -> dict:
    """A response test run of PAIRS' generations (character tokens) with a datamodule built with
    ``settings``: its report."""
    monkeypatch.setattr(
        "kokorozoo.evaluation.baselines.response_baselines",
        lambda train, targets: {name: texts[: len(targets)] for name, texts in RESPONSE_BASELINES.items()},
    )
    task = ResponseTask(quantization="none", lora=None, output_dir=str(tmp_path), metrics_tokenize="char")
    task.model = torch.nn.Linear(1, 1)
    task.generate_text = lambda prompts, *args: [g for g, _ in PAIRS][: len(prompts)]
    data = ResponseData(response_requests()[:2], lambda batch: {"requests": list(batch)}, **settings)
    trainer(tmp_path).test(task, datamodule=data, verbose=False)
    return json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))


def test_the_report_names_the_split(tmp_path, monkeypatch):
    report = response_test(tmp_path, monkeypatch, split_kind="counselor_disjoint")
    assert report["split"] == "counselor_disjoint" and set(report["baselines"]) == set(RESPONSE_BASELINES)


def test_a_client_model_is_reported_without_the_counselor_baselines(tmp_path, monkeypatch):
    report = response_test(tmp_path, monkeypatch, role="client")
    assert report["baselines"] == {} and report["split"] == "random"

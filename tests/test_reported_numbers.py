"""Every number a run reports, recomputed from the files the run wrote.

One short tiny fit + test of each task (response, score, score-heads and the plugin's topic task)
through the real ``kokorozoo`` CLI; then every figure of its ``metrics.json`` (overall and per item,
the model and every baseline) is recomputed from ``predictions.jsonl`` / ``generations.jsonl`` and
the training part, with references that share no code with :mod:`kokorozoo.metrics`: numpy for
ACC, ACC_soft and MAE (an invalid prediction is wrong and costs 5), sacrebleu and rouge-score on
the tokenization ``metrics.json`` names for BLEU-1..4 and ROUGE-1/2/L, plain Python for Distinct.
The predictions themselves must be the ones the model implies: the heads' best checkpoint is
exported and reloaded in a fresh process, and the argmax of its item logits must be what was
written; a text answer must parse to what was written; a topic row's prediction must be the argmax
of its probabilities. Figures agree to 1e-6.

The baselines are recomputed from what each row holds beside the model's output (the non-neural
score baseline's distribution, the response baselines' texts). Sections of ``metrics.json`` this
file does not know (more baselines, decision rules) are still
held to what holds for any score section: values in range, and an overall value equal to the mean
of its per-item values where metrics.json has them (every item is scored on the same dialogues).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from _references import (
    OWN_RULE,
    reference_by_rule,
    reference_f1,
    reference_modes,
    reference_scores,
    reference_text_metrics,
    score_arrays,
)

from kokorozoo.cli import main
from kokorozoo.data import ITEM_NAMES, dialogue_turns, score_split
from kokorozoo.data.score_format import parse_scores

ROOT = Path(__file__).resolve().parents[1]
TOPIC_CONFIG = ROOT / "plugins" / "kokorozoo-topic" / "configs" / "topic.yaml"
TOL = 1e-6
SCORE_KEYS = ("acc", "acc_soft", "mae")

#: The short runs (on top of conftest's ``short_fit_args``: 4 steps, 8 training dialogues).
#: Both score runs test the same 8 dialogues: the non-neural baseline fitted for the first is cached.
SCORE_ARGS = ("--data.init_args.max_length=768", "--data.init_args.limit_test=8")
RUNS = {
    "score-heads": ("score_heads.yaml", *SCORE_ARGS),
    # 8 new tokens: answers are cut short, so invalid items are part of what is checked
    "score": ("score.yaml", *SCORE_ARGS, "--model.init_args.max_new_tokens=8"),
    "response": (
        "response.yaml",
        "--data.init_args.limit_test=12",  # dialogues, of which 6 counselor turns are drawn
        "--data.init_args.test_turns=6",
        "--data.init_args.max_length=1024",
        "--model.init_args.max_new_tokens=16",
    ),
    "topic": (
        str(TOPIC_CONFIG),
        "--data.init_args.limit_test=12",
        "--data.init_args.max_length=128",
        "--trainer.enable_model_summary=false",
    ),
}


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=0, abs_tol=TOL)


def run_config(version: Path) -> dict:
    """The configuration the run saved (LightningCLI's config.yaml)."""
    return yaml.safe_load((version / "config.yaml").read_text(encoding="utf-8"))


def run_split(version: Path, kokorochat):
    """The score-prediction split the run's datamodule drew (its seed, and its kind where it has one)."""
    data = run_config(version)["data"]["init_args"]
    kind = {"split": data["split"]} if data.get("split") else {}
    return score_split(kokorochat.dialogues, data["seed"], **kind)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def run(short_fit_args, tmp_path_factory):
    """``run(name)``: the version folder of one short fit + test of a task, made once per module."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            config, *extra = RUNS[name]
            root = tmp_path_factory.mktemp(name)
            assert main(short_fit_args(config, root, *extra)) == 0
            [version] = sorted((root / "lightning_logs").iterdir())[-1:]
            done[name] = version
        return done[name]

    return get


# -- score prediction: ACC, ACC_soft, MAE in numpy ------------------------------------------------


def assert_section(report: dict, section: dict, prefix: str, per_item: dict[str, np.ndarray]) -> None:
    """A section's overall ACC/ACC_soft/MAE (mean over all pairs = mean over items, since every item
    is scored on the same dialogues) and its per-item columns ``{prefix}acc`` ... in ``per_item``."""
    for key in SCORE_KEYS:
        assert close(section[key], float(per_item[key].mean())), (prefix, key, section[key])
        written = [report["per_item"][name][f"{prefix}{key}"] for name in ITEM_NAMES]
        np.testing.assert_allclose(written, per_item[key], rtol=0, atol=TOL, err_msg=f"{prefix}{key}")


def check_score_run(version: Path, task: str, kokorochat) -> tuple[dict, list[dict]]:
    report = json.loads((version / "metrics.json").read_text(encoding="utf-8"))
    rows = read_jsonl(version / "predictions.jsonl")
    assert report["task"] == task and report["dialogues"] == len(rows) > 0
    assert list(report["per_item"]) == list(ITEM_NAMES)

    # the gold scores are the dataset's, for the first dialogues of the fixed test part
    split = run_split(version, kokorochat)
    assert [r["dialogue_id"] for r in rows] == [d.id for d in split.test[: len(rows)]]
    by_id = kokorochat.by_id()
    assert all(r["gold"] == list(by_id[r["dialogue_id"]].feedback.items) for r in rows)

    # the model
    gold, pred = score_arrays(rows)
    model = reference_scores(gold, pred)
    assert_section(report, report["metrics"], "", model)
    assert report["metrics"]["invalid"] == int(np.isnan(pred).sum())

    # the constant baseline: each item's mode on the whole training part of this seed
    modes = reference_modes(np.array([d.feedback.items for d in split.train]))
    assert report["baseline"]["modes"] == dict(zip(ITEM_NAMES, modes.tolist()))
    baseline = reference_scores(gold, np.broadcast_to(modes, gold.shape).astype(float))
    assert_section(report, report["baseline"], "baseline_", baseline)
    # the baseline's pairs exercise the ACC_soft tolerance: some are off by exactly 1 and by 2
    off = np.abs(modes - gold)
    assert (off == 1).any() and (off == 2).any()

    # the non-neural baseline: each metric under its rule, from the distributions written
    classical = np.array([r["classical_distribution"] for r in rows])
    assert classical.shape == (len(rows), len(ITEM_NAMES), 6)
    np.testing.assert_allclose(classical.sum(-1), 1.0, rtol=0, atol=1e-5)
    assert report["rules"]["classical"] == OWN_RULE
    assert_section(report, report["classical"], "classical_", reference_by_rule(gold, classical))

    check_other_sections(report)
    return report, rows


#: Sections checked against references (here, or by_rule in the heads' test).
KNOWN_SECTIONS = {"task", "seed", "dialogues", "metrics", "baseline", "classical", "per_item", "by_rule"}


def score_sections(obj, path=()):
    """Every dict under ``obj`` that reports ACC, ACC_soft and MAE, with its path."""
    if isinstance(obj, dict):
        if all(isinstance(obj.get(k), (int, float)) for k in SCORE_KEYS):
            yield path, obj
        for key, value in obj.items():
            yield from score_sections(value, (*path, key))


def check_other_sections(report: dict) -> None:
    """What holds for any score section this file has no reference for (another baseline, a
    decision rule): values in range, and per-item columns ``{section}_{metric}`` that average to
    the section's figure. (Not ACC <= ACC_soft: a section may take each metric under its own rule.)"""
    for key in set(report) - KNOWN_SECTIONS:
        for path, section in score_sections(report[key], (key,)):
            assert all(0 <= section[k] <= 100 for k in ("acc", "acc_soft")) and 0 <= section["mae"] <= 5, path
            prefix = "_".join(path) + "_"
            columns = {k: [report["per_item"][n].get(f"{prefix}{k}") for n in ITEM_NAMES] for k in SCORE_KEYS}
            for k, values in columns.items():
                if None not in values:
                    assert close(section[k], float(np.mean(values))), (path, k)


RELOAD = """
import json, sys, torch
from kokorozoo.data.datamodules import ScoreDataModule
from kokorozoo.tasks.score import ScoreHeadsTask
folder, settings = sys.argv[1], json.loads(sys.argv[2])  # the export, the datamodule's init_args
task = ScoreHeadsTask.from_export(folder)
dm = ScoreDataModule(**settings)
dm.connect(task.tokenizer)
dm.setup("test")
ids, logits = [], []
with torch.no_grad():
    for batch in dm.test_dataloader():
        ids += batch["dialogue_ids"]
        logits += task.item_logits(batch["prompt"]).tolist()
print(json.dumps({"ids": ids, "logits": logits}))
"""


def test_score_heads_numbers_are_what_the_exported_model_implies(run, kokorochat, tmp_path):
    version = run("score-heads")
    report, rows = check_score_run(version, "score-heads", kokorochat)
    assert report["metrics"]["invalid"] == 0

    # the best checkpoint (the one tested), exported and reloaded in a fresh process
    [ckpt] = (version / "checkpoints").glob("best-*.ckpt")
    assert main(["export", str(ckpt), str(tmp_path / "export")]) == 0
    settings = run_config(version)["data"]["init_args"]  # the run's datamodule, rebuilt there
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(tmp_path / "export"), json.dumps(settings)],
        capture_output=True, text=True, check=True, cwd=ROOT, env=env,
    )  # fmt: skip
    reloaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reloaded["ids"] == [r["dialogue_id"] for r in rows]
    logits = np.array(reloaded["logits"])
    assert logits.shape == (len(rows), len(ITEM_NAMES), 6)
    # the decision rule: the most likely level of each item
    assert np.argmax(logits, axis=-1).tolist() == [r["predicted"] for r in rows]
    # the distributions written are the reloaded model's, and every rule's figures are theirs
    distributions = np.array([r["distribution"] for r in rows])
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(distributions, softmax / softmax.sum(-1, keepdims=True), rtol=0, atol=1e-5)
    assert report["rules"]["by_rule"] == OWN_RULE
    assert_section(report, report["by_rule"], "by_rule_", reference_by_rule(score_arrays(rows)[0], distributions))
    # the run is not trivial: its predictions differ from gold by 0, 1 and 2 or more
    gold, pred = score_arrays(rows)
    assert {0, 1, 2} <= set(np.minimum(np.abs(pred - gold), 2).astype(int).ravel().tolist())


def test_score_text_numbers_are_what_the_generations_parse_to(run, kokorochat):
    report, rows = check_score_run(run("score"), "score", kokorochat)
    for row in rows:
        parsed = parse_scores(row["generation"]).tolist()
        assert row["predicted"] == [None if math.isnan(v) else int(v) for v in parsed]
    assert report["metrics"]["invalid"] > 0  # cut-off answers: the invalid path is on the table


# -- response generation: BLEU, ROUGE and Distinct from generations.jsonl --------------------------


def test_response_numbers_are_recomputed_from_the_generations(run, kokorochat):
    version = run("response")
    report = json.loads((version / "metrics.json").read_text(encoding="utf-8"))
    rows = read_jsonl(version / "generations.jsonl")
    assert report["task"] == "response" and report["turns"] == len(rows) > 0
    by_id = kokorochat.by_id()
    for row in rows:  # the reference is the dataset's counselor turn, after at least one turn
        turn = dialogue_turns(by_id[row["dialogue_id"]])[row["turn_index"]]
        assert turn.role == "counselor" and row["reference"] == turn.text and row["turn_index"] > 0
    generations, references = [r["generation"] for r in rows], [r["reference"] for r in rows]
    assert all(generations)
    expected = assert_text_figures(report["metrics"], generations, references, report["tokenize"], "model")
    assert expected["bleu1"] > 0 and expected["rouge1"] > 0 and 0 < expected["dist1"] < 100

    # the baselines, from the texts written beside each generation
    turns = {row["dialogue_id"]: dialogue_turns(by_id[row["dialogue_id"]]) for row in rows}
    for row in rows:  # copying: the counselor turn before the target
        before = [t.text for t in turns[row["dialogue_id"]][: row["turn_index"]] if t.role == "counselor"]
        assert row["baselines"]["copy_previous"] == (before[-1] if before else "")
    assert set(report["baselines"]) == {"copy_previous", "retrieval"}
    for name, figures in report["baselines"].items():
        assert_text_figures(figures, [r["baselines"][name] for r in rows], references, report["tokenize"], name)


def assert_text_figures(figures: dict, texts: list[str], references: list[str], tokenize: str, name: str) -> dict:
    """A section's BLEU/ROUGE/Distinct against the references' recomputation; returns the latter."""
    expected = reference_text_metrics(texts, references, tokenize)
    assert set(figures) == set(expected), name
    for key, value in expected.items():
        assert close(figures[key], value), (name, key, figures[key], value)
    return expected


# -- the topic plugin: accuracy, macro-F1, per-topic F1 and the majority baseline ------------------


def test_topic_numbers_are_recomputed_from_the_predictions(run, kokorochat):
    from kokorozoo_topic import TOPICS

    version = run("topic")
    report = json.loads((version / "metrics.json").read_text(encoding="utf-8"))
    rows = read_jsonl(version / "predictions.jsonl")
    assert report["task"] == "topic" and report["dialogues"] == len(rows) > 0
    by_id = kokorochat.by_id()
    assert all(r["topic"] == by_id[r["dialogue_id"]].topic.main_en for r in rows)
    for row in rows:  # the prediction is the most probable topic (probabilities are rounded: ties allowed)
        assert row["probabilities"][row["predicted"]] == max(row["probabilities"].values())

    index = {t: i for i, t in enumerate(TOPICS)}
    gold, pred = [index[r["topic"]] for r in rows], [index[r["predicted"]] for r in rows]
    per_topic, macro = reference_f1(gold, pred, len(TOPICS))
    assert close(report["metrics"]["acc"], float(np.mean(np.array(gold) == np.array(pred))))
    assert close(report["metrics"]["macro_f1"], macro)
    np.testing.assert_allclose([report["per_topic_f1"][t] for t in TOPICS], per_topic, rtol=0, atol=TOL)

    # the majority baseline: the training part's most frequent topic (the smaller index on a tie),
    # the training part being the one the run trained on (its first limit_train dialogues)
    train = run_split(version, kokorochat).train[: run_config(version)["data"]["init_args"]["limit_train"]]
    counts = Counter(index[d.topic.main_en] for d in train)
    majority = min(counts, key=lambda c: (-counts[c], c))
    baseline = report["baseline"]
    assert baseline["predicts"] == TOPICS[majority]
    assert close(baseline["acc"], float(np.mean(np.array(gold) == majority)))
    assert close(baseline["macro_f1"], reference_f1(gold, [majority] * len(gold), len(TOPICS))[1])

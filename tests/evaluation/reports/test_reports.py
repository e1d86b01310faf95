"""The run and data reports: built from a real short fit, from runs written in the tasks' exact
schema (five seeds, the baselines the schema is growing, Kokoro-Low/High side by side) and from
the real data; checked as files, as images and as numbers equal to metrics.json and to scipy."""

import html
import json
import re
import statistics
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from _runs import METRICS, write_score_run
from scipy.stats import spearmanr

from kokorozoo.cli import main
from kokorozoo.data import ITEM_NAMES
from kokorozoo.evaluation.data_report import DATA_FILE, FEATURES
from kokorozoo.evaluation.reports import (
    REPORT_FILE,
    asks_question,
    bleu_by_history,
    build_run_report,
    confusion,
    format_value,
    group_runs,
    history_bucket,
    item_spearman,
    load_run,
    totals,
)
from kokorozoo.evaluation.results import Result
from kokorozoo.metrics import BLEU


@pytest.fixture(scope="module")
def score_fit(short_fit_args, tmp_path_factory):
    """A real short fit of the text score task, tested on 4 dialogues (answers cut short, so
    some items are invalid)."""
    root = tmp_path_factory.mktemp("score-fit")
    extra = ("--data.init_args.limit_test=4", "--data.init_args.max_length=768", "--model.init_args.max_new_tokens=40")
    assert main(short_fit_args("score.yaml", root, *extra)) == 0
    return sorted((root / "lightning_logs").iterdir())[-1]


def page_text(path: Path) -> str:
    """The HTML without its images and tags: what a reader sees."""
    text = re.sub(r'src="data:image/png;base64,[^"]+"', "", path.read_text(encoding="utf-8"))
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


def check_images(report: Path, names: set[str]) -> None:
    """Every expected PNG is beside the page, opens as an image and is embedded in the page."""
    pngs = {p.stem: p for p in report.parent.glob("*.png")}
    assert names <= set(pngs), sorted(pngs)
    page = report.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(pngs)
    assert "http://" not in page and "https://" not in page and "<script" not in page  # opens offline, alone
    for png in pngs.values():
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and min(image.shape[:2]) > 200


def shown(metric: str, values: list[float]) -> str:
    """A value as the page shows it: the run's, or mean ± sample std over runs."""
    if len(values) == 1:
        return format_value(metric, values[0])
    return f"{format_value(metric, statistics.fmean(values))} ± {format_value(metric, statistics.stdev(values))}"


# -- score runs ---------------------------------------------------------------------------------------


def test_report_of_a_real_score_run(score_fit):
    report = build_run_report([score_fit], score_fit / "report")
    assert report == score_fit / "report" / REPORT_FILE
    check_images(report, {"score1_per_item", "score1_confusion", "score_spearman", "score_totals", "training_curves"})
    metrics = json.loads((score_fit / "metrics.json").read_text())
    text = page_text(report)
    assert "How each run was set up" in text and "ScoreTask" in text and " tiny " in text  # from config.yaml
    for metric in METRICS:
        assert format_value(metric, metrics["metrics"][metric]) in text
        assert format_value(metric, metrics["baseline"][metric]) in text
    invalid = metrics["metrics"]["invalid"]
    assert f"{invalid} of {metrics['dialogues'] * 20} predicted items" in text


def test_seeds_are_averaged_and_every_baseline_is_shown(seed_runs, tmp_path):
    report = build_run_report(seed_runs, tmp_path)
    check_images(report, {"score1_per_item", "score1_confusion", "score_spearman", "score_totals"})
    text = page_text(report)
    assert "score, 5 seeds (0, 1, 2, 3, 4)" in text
    runs = [json.loads((r / "metrics.json").read_text()) for r in seed_runs]
    assert set(Result.from_json(runs[0]).systems()) == {"model", "baseline", "classical"}
    for system, key in (("model", "metrics"), ("baseline", "baseline"), ("classical", "classical")):
        for metric in METRICS:
            assert shown(metric, [r[key][metric] for r in runs]) in text, (system, metric)
    assert shown("invalid", [r["metrics"]["invalid"] for r in runs]) in text
    assert "rules: acc: mode, acc_soft: mode, mae: median" in text
    for key in ("acc", "baseline_mae", "classical_acc_soft"):  # per-item columns: the mean over seeds
        item = ITEM_NAMES[16]
        assert format_value(key, statistics.fmean(r["per_item"][item][key] for r in runs)) in text
    assert "問題の明確化" in text  # Japanese item names


def test_runs_that_are_not_seeds_stand_side_by_side(seed_runs, response_runs, kokorochat, tmp_path):
    twin = write_score_run(tmp_path / "again" / "seed_0", kokorochat, 0, more_baselines=True)  # seed 0 again
    other = write_score_run(tmp_path / "other" / "seed_1", kokorochat, 1)  # no split, no classical: not the same
    runs = [load_run(p) for p in (*seed_runs[:2], twin, other, *response_runs)]
    groups = group_runs(runs)
    assert [(g.name, len(g.runs)) for g in groups] == [
        ("score1", 1), ("score2", 1), ("score3", 1), ("score4", 1), ("response1", 1), ("response2", 1)
    ]  # fmt: skip
    seeds, alone = group_runs([runs[0], runs[1], runs[3]])
    assert (seeds.label, len(seeds.runs), len(alone.runs)) == ("score, 2 seeds (0, 1)", 2, 1)
    assert alone.label.endswith("other/seed_1")
    low, high = group_runs(runs[4:])
    assert low.label.endswith("/low") and high.label.endswith("/high")  # what tells them apart, and its folder


def test_item_spearman_and_totals_from_the_predictions(seed_runs):
    run = load_run(seed_runs[0])
    rows = run.rows
    rhos = item_spearman(rows)
    for i in (0, 9, 19):
        pairs = [(r["gold"][i], r["predicted"][i]) for r in rows if r["predicted"][i] is not None]
        assert rhos[i] == pytest.approx(spearmanr(*zip(*pairs)).statistic, abs=1e-12)
    matrix = confusion(rows, 4)
    assert matrix.shape == (6, 6) and matrix.sum() == sum(r["predicted"][4] is not None for r in rows)
    gold, pred, left_out = totals(rows)
    assert len(gold) + left_out == len(rows) and gold.max() <= 100


# -- response runs ------------------------------------------------------------------------------------


def test_response_report(response_runs, tmp_path):
    report = build_run_report(response_runs, tmp_path, examples=3, seed=1)
    check_images(report, {"response_lengths", "response_bleu_by_history"})
    text = page_text(report)
    assert "Tokenized for the metrics: char (character level" in text
    for run in response_runs:
        metrics = json.loads((run / "metrics.json").read_text())
        for name, row in Result.from_json(metrics).systems().items():
            for metric, value in row.items():
                assert format_value(metric, value) in text, (run.name, name, metric)
    assert "echo" in text  # the high run's baseline
    assert "the turn before" in text and "Training" not in text  # these runs saved no config or curves
    rows = [json.loads(line) for line in (response_runs[0] / "generations.jsonl").read_text().splitlines()]
    shown = [r for r in rows if r["generation"] in text and r["reference"] in text]
    assert shown and all(r["previous"] in text for r in shown)  # each example after the turn it answers
    again = page_text(build_run_report(response_runs, tmp_path / "again", examples=3, seed=1))
    assert again == text  # the examples are drawn with the seed


def test_bleu_by_history_uses_the_runs_tokenization(response_runs):
    rows = load_run(response_runs[0]).rows
    buckets = bleu_by_history(rows, "char")
    assert sum(b["turns"] for b in buckets.values()) == len(rows)
    name, values = next(iter(buckets.items()))
    members = [r for r in rows if history_bucket(r["history_turns"]) == name]
    bleu = BLEU(2, tokenize="char")
    bleu.update([r["generation"] for r in members], [r["reference"] for r in members])
    assert values["bleu2"] == pytest.approx(float(bleu.compute()))


@pytest.mark.parametrize(
    "text, asks",
    [
        ("今日はどうされましたか？", True),
        ("どんなことがあったのでしょう?", True),
        ("そのときはどう感じましたか", True),
        ("それってつらかったのかな…", True),
        ("お話しいただけますか。ありがとうございます。", True),
        ("そうだったんですね。", False),
        ("ありがとうございます。\nよくわかりました", False),
    ],
)
def test_asks_question(text, asks):
    assert asks_question(text) is asks


def test_history_buckets():
    assert [history_bucket(n) for n in (0, 4, 5, 19, 20, 79, 80, 500)] == [
        "0-4", "0-4", "5-9", "10-19", "20-39", "40-79", "80+", "80+"
    ]  # fmt: skip


# -- the data report and the CLI ---------------------------------------------------------------------


def test_data_report_through_the_cli(kokorochat, kokorochat_root, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "report", "--root", str(kokorochat_root), "--out", str(out)]) == 0
    assert f"wrote {out / REPORT_FILE}" in capsys.readouterr().out
    check_images(out / REPORT_FILE, {"topics", "scores", "feature_correlations", "item_correlations"})
    figures = json.loads((out / DATA_FILE).read_text())
    text = page_text(out / REPORT_FILE)

    scores = np.array([d.score for d in kokorochat], float)
    assert figures["score"]["mean"] == pytest.approx(scores.mean(), abs=1e-9)
    assert "63.58" in text and "matches the paper's 63.58" in text and "matches the paper's 64" in text
    client_chars = [sum(len(u.text) for u in d.utterances if u.role == "client") for d in kokorochat]
    waits = [
        np.mean([(b.time - a.time).total_seconds() for a, b in zip(d.utterances, d.utterances[1:])
                 if a.role == "client" and b.role == "counselor"])
        for d in kokorochat
    ]  # fmt: skip
    ours = figures["feature_correlations"]
    assert ours["client_characters"] == pytest.approx(spearmanr(client_chars, scores).statistic, abs=1e-6)
    assert ours["counselor_response_time"] == pytest.approx(spearmanr(waits, scores).statistic, abs=1e-6)
    for name, (_, paper) in FEATURES.items():  # the paper's Figure 4, to its two decimals
        assert round(ours[name], 2) == paper
        assert f"{ours[name]:.4f}" in text
    items = np.array([d.feedback.items for d in kokorochat])
    expected = spearmanr(items[:, 14], items[:, 15]).statistic
    assert figures["item_correlations"][14][15] == pytest.approx(expected, abs=1e-6)
    assert f"{expected:.2f}" in text
    topics = {t["en"]: t["dialogues"] for t in figures["topics"]}
    assert sum(topics.values()) == len(kokorochat) == 6589 and topics["Workplace Issues"] == 1123


def test_cli_report_defaults_refusals_and_errors(response_runs, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for f in response_runs[0].iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    assert main(["report", str(run)]) == 0  # default out: RUN_DIR/report
    assert f"wrote {run / 'report' / REPORT_FILE}" in capsys.readouterr().out
    assert main(["report", str(run)]) == 2  # never over an existing report without --overwrite
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--overwrite" in err and str(run / "report") in err
    assert main(["report", str(run), "--overwrite"]) == 0
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nowhere" / "metrics.json") in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.json").write_text('{"task": "score", "metrics": {"acc": 1.0}}')
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r2")]) == 2
    assert "predictions.jsonl" in capsys.readouterr().err
    (tmp_path / "empty" / "predictions.jsonl").write_text('{"dialogue_id": "1", "gold": 3, "predicted": 3}\n')
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r3")]) == 2  # e.g. a plugin's rows
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not the rows of a score test run" in err

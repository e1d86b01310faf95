"""The result schema: ``metrics.json`` read and written in the layout kokorozoo has always used, the
systems a report shows, and the one mean ± std over seeds (sample std) the commands print."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from kokorozoo.data import ITEM_NAMES
from kokorozoo.evaluation.results import (
    Result,
    ResultError,
    Summary,
    aggregate,
    aggregate_per_item,
    format_value,
    label,
    read_result,
    read_score_result,
    summarize_score_runs,
    write_result,
)

pytestmark = pytest.mark.mutation

SCORE = {
    "task": "score-heads", "seed": 3, "split": "client_disjoint", "dialogues": 2, "language": "ja",
    "metrics": {"acc": 35.0, "acc_soft": 80.0, "mae": 0.9, "invalid": 0},
    "baseline": {"acc": 34.4, "acc_soft": 77.4, "mae": 0.905, "modes": {"felt_respected": 3}},
    "classical": {"acc": 39.0, "acc_soft": 88.0, "mae": 0.74},
    "rules": {"metrics": "argmax", "baseline": "the per-item mode", "classical": {"acc": "argmax"}},
    "by_rule": {"acc": 36.0, "acc_soft": 85.0, "mae": 0.8},
    "per_item": {name: {"acc": i, "acc_soft": 2.0 * i, "mae": 0.1, "baseline_acc": 1.0, "classical_mae": 0.5,
                        "by_rule_acc_soft": 3.0} for i, name in enumerate(ITEM_NAMES)},
    "checkpoint": "best.ckpt",
}  # fmt: skip
RESPONSE = {
    "task": "response", "split": "random", "turns": 5, "tokenize": "char",
    "metrics": {"bleu1": 20.0, "dist1": 3.0},
    "baselines": {"copy_previous": {"bleu1": 10.0, "dist1": 1.0}, "retrieval": {"bleu1": 12.0, "dist1": 2.0}},
    "checkpoint": None, "zero_shot": True,
}  # fmt: skip


@pytest.mark.parametrize("written", [SCORE, RESPONSE], ids=["score", "response"])
def test_metrics_json_reads_and_writes_back_unchanged(written):
    result = Result.from_json(written)
    assert result.to_json() == written
    assert json.dumps(result.to_json()) == json.dumps(written)  # the same order too


def test_systems_are_the_model_every_baseline_and_the_model_by_rule():
    score = Result.from_json(SCORE)
    assert list(score.systems()) == ["model", "baseline", "classical", "by_rule"]
    assert score.systems()["baseline"] == {"acc": 34.4, "acc_soft": 77.4, "mae": 0.905}  # numbers only
    assert (score.seed, score.split, score.size, score.language, score.tokenize) == (
        3,
        "client_disjoint",
        2,
        "ja",
        None,
    )
    response = Result.from_json(RESPONSE)
    assert list(response.systems()) == ["model", "copy_previous", "retrieval"]
    assert (response.size, response.tokenize, response.zero_shot, response.seed) == (5, "char", True, None)


def test_every_task_logs_its_figures_under_one_scheme():
    assert Result.from_json(RESPONSE).logged_figures() == {
        "test_bleu1": 20.0, "test_dist1": 3.0, "test_copy_previous_bleu1": 10.0, "test_copy_previous_dist1": 1.0,
        "test_retrieval_bleu1": 12.0, "test_retrieval_dist1": 2.0,
    }  # fmt: skip
    logged = Result.from_json(SCORE).logged_figures()
    assert logged["test_acc"] == 35.0 and logged["test_invalid"] == 0.0 and logged["test_baseline_mae"] == 0.905
    assert logged["test_by_rule_acc_soft"] == 85.0 and logged["test_classical_acc"] == 39.0
    assert not any("modes" in k for k in logged) and len(logged) == 4 + 3 + 3 + 3


def test_per_item_columns_by_system():
    per_item = Result.from_json(SCORE).per_item
    assert per_item["model"]["acc"] == list(range(20)) and per_item["model"]["acc_soft"] == [2.0 * i for i in range(20)]
    assert per_item["baseline"] == {"acc": [1.0] * 20} and per_item["classical"] == {"mae": [0.5] * 20}
    assert per_item["by_rule"] == {"acc_soft": [3.0] * 20}  # not read as by_rule_acc + "_soft"
    partial = Result.from_json({**SCORE, "per_item": {ITEM_NAMES[1]: {"acc": 1.0, "other": 2.0}}}).per_item
    assert list(partial) == ["model"] and partial["model"]["acc"][1] == 1.0
    assert math.isnan(partial["model"]["acc"][0])


def test_a_task_of_its_own_keeps_its_sections():
    topic = {"task": "topic", "seed": 0, "split": "random", "dialogues": 6, "metrics": {"acc": 0.5},
             "baseline": {"predicts": "Others", "acc": 0.2}, "rules": {"baseline": "the most frequent label"},
             "per_topic_f1": {"Others": 0.1}, "checkpoint": None}  # fmt: skip
    result = Result.from_json(topic)
    assert result.extra == {"per_topic_f1": {"Others": 0.1}} and result.to_json() == topic


def test_read_result_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json: no such file"):
        read_result(tmp_path)
    (tmp_path / "metrics.json").write_text("{")
    with pytest.raises(ResultError, match=r"metrics.json: not valid JSON"):
        read_result(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "score"}))
    with pytest.raises(ResultError, match=r"metrics.json: no 'metrics' object"):
        read_result(tmp_path / "metrics.json")
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {}, "baselines": {"x": 1}}))
    with pytest.raises(ResultError, match="'baselines' must map each baseline's name to its figures"):
        read_result(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps(RESPONSE))
    assert read_result(tmp_path).to_json() == RESPONSE


def test_summary_is_the_mean_and_the_sample_std():
    assert Summary.of([33.0, 35.0, 37.0]) == Summary(35.0, 2.0, 3)
    assert Summary.of([0.8]) == Summary(0.8, 0.0, 1)  # one run: no spread
    assert Summary.of([1.0, None, math.nan, 3.0]) == Summary(2.0, statistics.stdev([1.0, 3.0]), 2)
    empty = Summary.of([])
    assert empty.n == 0 and math.isnan(empty.mean) and empty.format("acc") == "–"
    assert Summary.of([0.81, 0.83]).format("mae") == "0.8200 ± 0.0141"
    assert Summary.of([35.0]).format("acc") == "35.00" and Summary.of([1.0, 2.0]).format("invalid") == "2 ± 1"
    assert Summary(1.5, 0.5, 2).as_dict() == {"mean": 1.5, "std": 0.5, "n": 2}


def test_format_value():
    assert (format_value("mae", 0.12345), format_value("baseline_mae", 1.0)) == ("0.1235", "1.0000")
    assert (format_value("invalid", 3.0), format_value("acc", 35.456), format_value("bleu1", 2)) == (
        "3",
        "35.46",
        "2.00",
    )
    assert format_value("acc", None) == format_value("acc", math.nan) == "–"


def test_aggregate_over_seeds_by_system():
    runs = [Result.from_json({**SCORE, "seed": s, "metrics": {**SCORE["metrics"], "acc": acc}})
            for s, acc in enumerate([33.0, 35.0, 37.0])]  # fmt: skip
    runs[2].by_rule = None  # one run without: counted over the two that have it
    summary = aggregate(runs)
    assert list(summary) == ["model", "baseline", "classical", "by_rule"]
    assert summary["model"]["acc"] == Summary(35.0, 2.0, 3) and summary["baseline"]["mae"] == Summary(
        statistics.fmean([0.905] * 3), 0.0, 3
    )
    assert summary["by_rule"]["acc"].n == 2
    items = aggregate_per_item(runs)
    assert items["model"]["acc"][4] == Summary(4.0, 0.0, 3) and len(items["baseline"]["acc"]) == 20


def write(folder, **changes):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({**SCORE, **changes}))
    return folder / "metrics.json"


def test_summarize_score_runs(tmp_path):
    paths = [write(tmp_path / str(s), seed=s, classical={"acc": 39.0 + s, "acc_soft": 88.0, "mae": 0.74})
             for s in range(3)]  # fmt: skip
    paths.append(write(tmp_path / "3", seed=3, by_rule=None))
    result = summarize_score_runs(paths)
    assert result["columns"] == ["acc", "acc_soft", "mae", "invalid", "baseline_acc", "baseline_acc_soft",
                                 "baseline_mae", "classical_acc", "classical_acc_soft", "classical_mae"]  # fmt: skip
    assert result["summary"]["classical_acc"] == {"mean": statistics.fmean([39, 40, 41, 39]),
                                                  "std": statistics.stdev([39, 40, 41, 39]), "n": 4}  # fmt: skip
    assert [r["seed"] for r in result["runs"]] == [0, 1, 2, 3] and result["split"] == "client_disjoint"
    assert result["runs"][0]["run"] == str(paths[0]) and "by_rule_acc" not in result["runs"][0]
    with pytest.raises(ValueError, match="^no metrics.json to aggregate$"):
        summarize_score_runs([])
    other = write(tmp_path / "split", split="random")
    with pytest.raises(ValueError, match=r"different splits \(client_disjoint, random\)"):
        summarize_score_runs([paths[0], other])
    text = write(tmp_path / "text", task="score")
    with pytest.raises(ValueError, match=r"different tasks \(score, score-heads\)"):
        summarize_score_runs([paths[0], text])
    response = tmp_path / "response.json"
    response.write_text(json.dumps(RESPONSE))
    with pytest.raises(ValueError, match="response.json: not a score-prediction metrics.json"):
        summarize_score_runs([response])


def test_metrics_json_is_indented_utf8_text_that_keeps_japanese(tmp_path):
    result = Result.from_json({**SCORE, "per_topic_f1": {"職場の問題": 0.5}})
    path = write_result(result, tmp_path / "metrics.json")
    assert path.read_bytes() == (json.dumps(result.to_json(), ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    assert "職場の問題" in path.read_text(encoding="utf-8")


def test_a_result_that_reads_a_seed_names_it_even_when_it_has_none():
    assert Result(task="topic", metrics={}, dialogues=3).to_json()["seed"] is None
    assert "seed" not in Result(task="response", metrics={}, turns=3).to_json()
    assert Result.from_json({**SCORE, "by_rule": "not figures"}).by_rule is None


def test_reading_errors_name_the_file(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "score"}), encoding="utf-8")
    with pytest.raises(ResultError, match=str(tmp_path / "metrics.json")):
        read_result(tmp_path)
    (tmp_path / "response").mkdir()
    (tmp_path / "response" / "metrics.json").write_text(json.dumps(RESPONSE), encoding="utf-8")
    (tmp_path / "no-baseline").mkdir()
    no_baseline = {k: v for k, v in SCORE.items() if k != "baseline"}
    (tmp_path / "no-baseline" / "metrics.json").write_text(json.dumps(no_baseline), encoding="utf-8")
    for bad in (
        tmp_path / "metrics.json",
        tmp_path / "response" / "metrics.json",
        tmp_path / "no-baseline" / "metrics.json",
    ):
        with pytest.raises(ValueError) as error:
            read_score_result(bad)
        assert str(error.value) == f"{bad}: not a score-prediction metrics.json"


def test_labels_are_the_papers_names():
    assert (label("acc_soft"), label("bleu4"), label("rougeL"), label("macro_f1")) == (
        "ACC_soft",
        "BLEU-4",
        "ROUGE-L",
        "macro_f1",
    )


def test_per_item_over_runs_that_differ_in_their_systems():
    first = Result.from_json(SCORE)
    second = Result.from_json({**SCORE, "per_item": {name: {"acc": 10.0} for name in ITEM_NAMES}})
    items = aggregate_per_item([first, second])
    assert list(items) == ["model", "baseline", "classical", "by_rule"]  # the first run's systems
    assert items["model"]["acc"][3] == Summary(statistics.fmean([3, 10]), statistics.stdev([3, 10]), 2)
    assert items["baseline"]["acc"][0] == Summary(1.0, 0.0, 1)  # the second run has no baseline column
    assert aggregate_per_item([]) == {}
    empty = Summary.of([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.std)


def test_one_run_is_summarised_alone_and_its_rows_name_task_and_split(tmp_path):
    path = write(tmp_path / "one", seed=0, classical=None, by_rule=None)
    result = summarize_score_runs([path])
    assert result["split"] == "client_disjoint" and result["columns"][-1] == "baseline_mae"
    [row] = result["runs"]
    assert (row["task"], row["split"], row["acc"], row["baseline_mae"]) == (
        "score-heads",
        "client_disjoint",
        35.0,
        0.905,
    )
    assert result["summary"]["baseline_acc"] == {"mean": 34.4, "std": 0.0, "n": 1}

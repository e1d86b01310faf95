"""EndpointResponseTask's settings: an endpoint is MODEL@URL, and such a model is tested, never fitted
(what it answers is checked end to end in tests/test_serving.py)."""

import json
from pathlib import Path

import pytest

from kokorozoo.cli import main
from kokorozoo.errors import UsageError
from kokorozoo.tasks.endpoint import EndpointResponseTask


def test_an_endpoint_is_model_at_url():
    with pytest.raises(UsageError, match=r"model.init_args.endpoint: expected MODEL@URL"):
        EndpointResponseTask(endpoint="gpt-4o")
    task = EndpointResponseTask(endpoint="gpt-4o@https://api.openai.com/v1", max_new_tokens=64)
    assert task.endpoint.max_tokens == 64 and task.endpoint.temperature == 0.0 and task.remote


def test_a_model_behind_an_endpoint_cannot_be_fitted(short_fit_args, tmp_path, capsys):
    args = short_fit_args("response.yaml", tmp_path, "--model=EndpointResponseTask")
    args.append("--model.init_args.endpoint=m@http://127.0.0.1:9/v1")
    assert main(args) == 2
    assert "kokorozoo can test it, not fit it" in capsys.readouterr().err


def _score_test(tmp_path, url, name, small_tiny):
    args = [
        "test",
        "--config",
        str(Path(__file__).resolve().parents[2] / "configs" / "score.yaml"),
        "--model=EndpointScoreTask",
        f"--model.init_args.endpoint=m@{url}",
        *[f"--model.init_args.tiny.{k}={v}" for k, v in vars(small_tiny).items()],
        "--data.init_args.limit_test=8",
        "--data.init_args.max_length=768",  # the small tiny tokenizer writes the answer in more tokens
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / name}",
    ]
    assert main(args) == 0
    [folder] = (tmp_path / name).glob("lightning_logs/version_*")
    return json.loads((folder / "metrics.json").read_text())


def test_a_text_score_test_through_an_endpoint_reads_answers_as_the_local_model_does(small_tiny, tmp_path, monkeypatch):
    """An endpoint that answers nothing usable: every item invalid, as the local parser counts it;
    one that answers the training part's per-item modes scores exactly what the mode baseline
    scores. Each dialogue goes as one user message: the transcript, then the instruction."""
    from _servers import FailingServer

    from kokorozoo.data.score_format import SCORE_INSTRUCTION, format_scores
    from kokorozoo.records import ITEM_NAMES

    monkeypatch.setenv("KOKOROZOO_ENDPOINT_CACHE", str(tmp_path / "answers.sqlite"))
    vague = FailingServer(reply=lambda body: "よくわかりません。")
    try:
        unusable = _score_test(tmp_path, vague.url, "vague", small_tiny)
    finally:
        vague.close()
    assert unusable["metrics"]["invalid"] == 8 * len(ITEM_NAMES) and unusable["endpoint"]["requests"] == 8
    [message] = vague.bodies[0]["messages"]
    assert message["role"] == "user" and message["content"].endswith(SCORE_INSTRUCTION)
    assert message["content"].startswith(("カウンセラー: ", "クライアント: "))

    constant = unusable["baseline"]  # the per-item mode of the training part, answered for every dialogue
    modes = [constant["modes"][name] for name in ITEM_NAMES]
    modal = FailingServer(reply=lambda body: format_scores(modes))
    try:
        answered = _score_test(tmp_path, modal.url, "modal", small_tiny)
    finally:
        modal.close()
    assert answered["metrics"]["invalid"] == 0 and "zero_shot" not in answered
    for metric in ("acc", "acc_soft", "mae"):
        assert answered["metrics"][metric] == pytest.approx(constant[metric]), metric

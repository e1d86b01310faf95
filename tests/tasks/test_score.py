"""The score tasks: the answer parser, the losses, both tasks end to end through the real CLI on
the tiny backbone and the real data, the heads' export and reload in a fresh process, the paper's
configs, and the test paths in seconds (marked for the mutation session)."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _fakes import PAD, SEED, TOL, ScoreData, read_jsonl, tiny_llama, trainer
from _references import OWN_RULE, reference_by_rule, reference_modes, reference_scores, score_arrays

from kokorozoo.cli import main
from kokorozoo.data import ITEM_NAMES
from kokorozoo.data.datamodules import ScoreDataModule, ScoreSample, collate_scores
from kokorozoo.data.score_format import answer_form, format_scores, parse_scores
from kokorozoo.errors import UsageError
from kokorozoo.tasks import ScoreHeadsTask, ScoreTask
from kokorozoo.tasks.response import token_losses
from kokorozoo.tasks.score import HEADS_FILE

ROOT = Path(__file__).resolve().parents[2]
GOLD = [3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]


def scores(text):
    return [None if math.isnan(v) else int(v) for v in parse_scores(text).tolist()]


# -- the answer format and its parser -------------------------------------------------------


@pytest.mark.mutation
def test_format_and_parse_round_trip():
    text = format_scores(GOLD)
    assert text.splitlines()[:2] == ["D1: 3", "D2: 4"] and len(text.splitlines()) == 20
    assert scores(text) == GOLD
    assert parse_scores(text).dtype == torch.float32 and parse_scores(text).shape == (20,)


@pytest.mark.mutation
@pytest.mark.parametrize(
    "text, expected",
    [
        ("", [None] * 20),
        (None, [None] * 20),
        (12345, [None] * 20),
        ("I cannot rate this dialogue.", [None] * 20),
        ("D1: 3\nD2: 4\nD3:", [3, 4] + [None] * 18),  # partial: cut off mid-answer
        ("D1: 3\nD2: \nD3: 5", [3, None, 5] + [None] * 17),  # a value never comes from the next line
        ("D1: 6\nD2: -1\nD3: 10\nD4: 3.5\nD5: +3\nD6: 35", [None] * 20),  # out of range or not 0-5
        ("D0: 3\nD21: 4\nD100: 5\nD1: 2", [2] + [None] * 19),  # item numbers outside 1-20 are ignored
        ("D1: " + "9" * 5000 + "\nD2: 4", [None, 4] + [None] * 18),  # a huge number is just invalid
        ("評価です。D1: 3点、D2=4 (まあまあ)\nd3 : 5", [3, 4, 5] + [None] * 17),  # text around, = and d
        ("Ｄ１：３\nＤ２： ４", [3, 4] + [None] * 18),  # full-width
        ("D1: 3\nD1: 3\nD2: 4\nD2: 5", [3, None] + [None] * 18),  # duplicates: equal ok, conflicting invalid
        ("AD1: 3 D12: 4", [None] * 11 + [4] + [None] * 8),  # D must start a label; D12 is not D1
        (
            "D1: 3 D2: 4 D3: 5 D4: 0 D5: 1 D6: 2 D7: 3 D8: 4 D9: 5 D10: 0 D11: 1 D12: 2 D13: 3 D14: 4 "
            "D15: 5 D16: 0 D17: 1 D18: 2 D19: 3 D20: 4<|eot_id|>",
            GOLD,
        ),  # one line works too
    ],
)
def test_parser_never_raises_and_marks_what_is_invalid(text, expected):
    assert scores(text) == expected


@pytest.mark.mutation
def test_format_rejects_a_wrong_number_of_scores():
    with pytest.raises(ValueError):
        format_scores([3] * 19)


# -- losses and the heads' reading of the prompt ---------------------------------------------


@pytest.fixture(scope="module")
def score_batch(kokorochat, tiny_tokenizer):
    dm = ScoreDataModule(max_length=768, limit_test=3, eval_batch_size=3)
    dm._data = kokorochat
    dm.connect(tiny_tokenizer)
    dm.setup("test")
    return dm, next(iter(dm.test_dataloader()))


def test_answer_loss_equals_the_full_forward_loss(small_tiny, score_batch):
    task = ScoreTask(tiny=small_tiny, quantization="none", compute_dtype="float32")
    task.configure_model()
    task.eval()
    _, batch = score_batch
    with torch.no_grad():
        loss, count = task.loss(batch)
        logits = task.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total, full_count = token_losses(logits, batch["labels"])
    assert int(count) == int(full_count) > 100  # the whole answer of every row
    assert float(loss) == pytest.approx(float(total / full_count), rel=1e-5)


def test_heads_read_the_same_state_whatever_the_batch(small_tiny, score_batch):
    task = ScoreHeadsTask(tiny=small_tiny, quantization="none", compute_dtype="float32")
    task.configure_model()
    task.eval()
    dm, batch = score_batch
    lengths = batch["prompt"]["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # left padding is exercised
    with torch.no_grad():
        together = task.item_logits(batch["prompt"])
        alone = torch.cat([task.item_logits(dm.collate([s], "test")["prompt"]) for s in dm.samples("test")])
    assert together.shape == (3, 20, 6)
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


# -- end to end through the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fit_args(short_fit_args):
    """The short fit of either score config, with 3 test dialogues and prompts of 768 tokens."""
    return lambda config, root, *extra: short_fit_args(
        config, root, "--data.init_args.limit_test=3", "--data.init_args.max_length=768", *extra
    )


def run_dir(root):
    return sorted((root / "lightning_logs").iterdir())[-1]


def check_outputs(version, task_name):
    report = json.loads((version / "metrics.json").read_text())
    assert report["task"] == task_name and report["seed"] == 0 and report["dialogues"] == 3
    assert set(report["metrics"]) == {"acc", "acc_soft", "mae", "invalid"}
    assert set(report["baseline"]) == {"acc", "acc_soft", "mae", "modes"}
    assert list(report["baseline"]["modes"]) == list(ITEM_NAMES)
    assert list(report["per_item"]) == list(ITEM_NAMES)
    systems = ["", "baseline_", "classical_"] + (["by_rule_"] if "by_rule" in report else [])
    assert set(report["per_item"][ITEM_NAMES[0]]) == {f"{s}{m}" for s in systems for m in ("acc", "acc_soft", "mae")}
    assert set(report["classical"]) == {"acc", "acc_soft", "mae"} and report["split"] == "random"
    assert report["rules"]["classical"] == {"acc": "argmax", "acc_soft": "best_window", "mae": "median"}
    assert 0 <= report["classical"]["acc"] <= 100 and 0 <= report["classical"]["mae"] <= 5
    rows = [json.loads(line) for line in (version / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["gold"]) == len(r["predicted"]) == 20 for r in rows)
    assert all(p is None or 0 <= p <= 5 for r in rows for p in r["predicted"])
    invalid = sum(p is None for r in rows for p in r["predicted"])
    assert report["metrics"]["invalid"] == invalid
    header = (version / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "val_loss", "val_acc", "val_acc_soft", "val_mae", "val_invalid"} <= set(header)
    assert set(SUMMARY) <= set(header)
    assert any(p.name.startswith("best-") for p in (version / "checkpoints").iterdir())
    return report, rows


#: What the final test table shows: the model and, beside it, the baseline.
SUMMARY = (
    "test_acc",
    "test_acc_soft",
    "test_mae",
    "test_invalid",
    "test_baseline_acc",
    "test_baseline_acc_soft",
    "test_baseline_mae",
)


@pytest.fixture(scope="module")
def text_fit(fit_args, tmp_path_factory):
    """A short text-variant fit; generation is cut to 8 tokens, so every answer is partial and the
    invalid path is exercised. Returns the run folder and what the fit printed.

    stderr is for what concerns the user: a plain fit (its settings sound) leaves it empty (no
    warning of the libraries underneath, no weight-loading bar, no advertisement)."""
    root = tmp_path_factory.mktemp("text")
    out = subprocess.run([sys.executable, "-m", "kokorozoo.cli", *fit_args("score.yaml", root,
                          "--model.init_args.max_new_tokens=8")], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr == ""
    assert "Tip:" not in out.stdout and "weights_only" not in out.stdout
    return root, out.stdout


def test_score_task_end_to_end(text_fit):
    root, out = text_fit
    assert "(val_acc = " in out  # the best checkpoint is chosen by validation ACC
    assert all(name in out for name in SUMMARY)  # the final table
    report, rows = check_outputs(run_dir(root), "score")
    assert all(isinstance(r["generation"], str) for r in rows)
    assert report["metrics"]["invalid"] > 0
    assert report["rules"]["metrics"] == "the parsed greedy answer"


def test_constrained_scoring_of_a_greedy_trained_checkpoint(text_fit, fit_args, tmp_path, capsys):
    """The user's ``scoring`` wins over the checkpoint's: the same model read without generating
    has no invalid item and a distribution per item, under each metric's rule too."""
    root, _ = text_fit
    best = next((run_dir(root) / "checkpoints").glob("best-*.ckpt"))
    args = fit_args("score.yaml", tmp_path, "--model.init_args.scoring=constrained",
                    f"--model.init_args.output_dir={tmp_path / 'constrained'}", f"--ckpt_path={best}")  # fmt: skip
    args[0] = "test"
    assert main([a for a in args if not a.startswith(("--trainer.max_steps", "--trainer.val_check"))]) == 0
    assert "test_by_rule_acc" in capsys.readouterr().out
    report = json.loads((tmp_path / "constrained" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "constrained" / "predictions.jsonl").read_text().splitlines()]
    assert report["metrics"]["invalid"] == 0 and report["rules"]["metrics"].startswith("argmax of the six digits")
    assert set(report["by_rule"]) == {"acc", "acc_soft", "mae"}
    probs = torch.tensor([r["distribution"] for r in rows])
    assert probs.shape == (3, 20, 6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 20))
    assert [r["predicted"] for r in rows] == probs.argmax(-1).tolist()


def test_answer_form_finds_each_value_token(tiny_tokenizer, score_batch):
    form = answer_form(tiny_tokenizer, GOLD)
    assert len(form.value_positions) == 20 and len(set(form.level_ids)) == 6
    assert tiny_tokenizer.convert_ids_to_tokens(form.level_ids) == list("012345")
    assert [form.ids[p] for p in form.value_positions] == [form.level_ids[v] for v in GOLD]
    assert tiny_tokenizer.decode(form.ids) == format_scores(GOLD)
    dm, _ = score_batch  # in context, the training answer is exactly the form with the gold values
    sample = dm.samples("test")[0]
    gold_form = answer_form(tiny_tokenizer, sample.scores).ids
    assert sample.input_ids[sample.prompt_length : sample.prompt_length + len(gold_form)] == gold_form


BOS = 0x10FFFF


def char_tokenizer(merge=None):
    """One token a character, after ``merge(text)`` may have rewritten the text (a character
    outside the answer stands for a merged token); a BOS first unless asked for no special tokens,
    as Hugging Face tokenizers do."""

    def tokenize(text, add_special_tokens=True):
        ids = [ord(c) for c in (merge(text) if merge else text)]
        return {"input_ids": [BOS] * bool(add_special_tokens) + ids}

    return tokenize


@pytest.mark.mutation
def test_answer_form_of_a_character_tokenizer():
    text = format_scores(GOLD)
    form = answer_form(char_tokenizer(), GOLD)
    assert form.ids == [ord(c) for c in text] and form.level_ids == [ord(str(v)) for v in range(6)]
    starts = [i for i, c in enumerate(text) if c == "D"]
    assert form.value_positions == [text.index(" ", start) + 1 for start in starts]


@pytest.mark.mutation
def test_answer_form_needs_only_the_six_levels_to_be_tokens_of_their_own():
    """How a 6 or any other value would be tokenized does not matter: only 0-5 are written."""
    form = answer_form(char_tokenizer(lambda t: t.replace(": 6", "\x06")), GOLD)
    assert form.ids == [ord(c) for c in format_scores(GOLD)]


def only_the_first_value(text):
    """A tokenizer that loses every value but the first: the value positions are not 20."""
    lines = text.splitlines()
    return "\n".join([lines[0]] + [line.rsplit(" ", 1)[0] + " x" for line in lines[1:]])


MERGES_MESSAGE = (
    "constrained scoring needs each score digit to be a token of its own in the answer; this tokenizer merges"
    " them with their neighbours: use model.init_args.scoring: greedy"
)
VALUES_MESSAGE = "constrained scoring: the answer's tokens change with its values; use scoring: greedy"


@pytest.mark.mutation
@pytest.mark.parametrize(
    "merge",
    [
        lambda t: t.replace("3\n", "\x01"),  # a value merged with the line's end: lengths differ
        lambda t: t.replace(": 5", ":\x05"),  # level 5 merged with its space: 20 positions, but not one token a level
        lambda t: t.replace("D1: 4", "D1: \x04"),  # level 4 is another token in item 1 than elsewhere
        lambda t: re.sub(r"(\d+): (\d)", lambda m: chr(0x100 + 10 * int(m[1]) + int(m[2])), t),  # item+value, one token
        lambda t: t.replace("5\n", "5\x0b"),  # the line's end after a 5 is another token: 40 positions differ
        only_the_first_value,  # one position differs
    ],
)
def test_answer_form_refuses_a_tokenizer_that_merges_values(merge):
    with pytest.raises(UsageError) as error:
        answer_form(char_tokenizer(merge), GOLD)
    assert str(error.value) == MERGES_MESSAGE


@pytest.mark.mutation
def test_answer_form_refuses_a_tokenizer_whose_answer_depends_on_its_values():
    with pytest.raises(UsageError) as error:  # only GOLD's own answer merges "3\nD2: 4"
        answer_form(char_tokenizer(lambda t: t.replace("3\nD2: 4", "\x03")), GOLD)
    assert str(error.value) == VALUES_MESSAGE


def test_constrained_distribution_is_the_lm_heads_over_the_six_digits(small_tiny, score_batch, tiny_tokenizer):
    """One forward over prompt + answer form equals the full LM's logits at the value positions,
    restricted to the six digits and normalised; left padding changes nothing."""
    task = ScoreTask(tiny=small_tiny, quantization="none", compute_dtype="float32", scoring="constrained")
    task.configure_model()
    task.eval()
    dm, batch = score_batch
    fill = [int(v) for v in torch.randint(0, 6, (20,), generator=torch.Generator().manual_seed(0))]
    task._form = form = answer_form(tiny_tokenizer, fill)
    together = task.answer_distribution(batch["prompt"])
    for row, sample in enumerate(dm.samples("test")):
        ids = torch.tensor([sample.prompt_ids + form.ids])
        with torch.no_grad():
            logits = task.model(input_ids=ids).logits[0]
        at = torch.tensor(form.value_positions) + sample.prompt_length - 1
        expected = logits[at][:, form.level_ids].softmax(-1)
        torch.testing.assert_close(together[row], expected, atol=1e-4, rtol=1e-4)
    predicted, rows = task.infer(batch)
    assert torch.equal(predicted, together.argmax(-1).float()) and len(rows[0]["distribution"]) == 20


@pytest.mark.mutation
def test_scoring_and_features_refuse_unknown_values():
    with pytest.raises(UsageError) as error:
        ScoreTask(scoring="beam")
    assert str(error.value) == "model.init_args.scoring must be one of greedy, constrained; got 'beam'"
    with pytest.raises(UsageError) as error:
        ScoreHeadsTask(features="topics")
    assert str(error.value) == "model.init_args.features must be one of none, statistics; got 'topics'"
    assert ScoreTask().hparams.max_new_tokens == 160 and ScoreTask().scoring == "greedy"  # the defaults


def test_heads_read_standardised_statistics(small_tiny, score_batch):
    """With ``features: statistics`` the heads read [hidden, (log1p(stats) - mean) / scale], the
    standardisation fitted on the training part."""
    task = ScoreHeadsTask(tiny=small_tiny, quantization="none", compute_dtype="float32", features="statistics")
    task.configure_model()
    task.eval()
    dm, batch = score_batch
    train = dm.train_statistics()
    assert train.shape == (len(dm.make_split(dm.data.dialogues).train), 8)
    task._standardise_on(train)
    torch.testing.assert_close(task.statistics_mean, train.log1p().mean(0))
    torch.nn.init.normal_(task.heads.weight, std=1.0)
    with torch.no_grad():
        hidden = task.last_token_states(batch["prompt"]["input_ids"], batch["prompt"]["attention_mask"])
        stats = (batch["statistics"].log1p() - task.statistics_mean) / task.statistics_scale
        expected = task.heads(torch.cat([hidden, stats], -1)).view(-1, 20, 6)
        torch.testing.assert_close(task.item_logits(batch["prompt"], batch["statistics"]), expected)
        changed = task.item_logits(batch["prompt"], batch["statistics"] * 2)
    assert not torch.allclose(changed, expected)  # the statistics are read
    with pytest.raises(ValueError) as error:
        task.item_logits(batch["prompt"])
    assert str(error.value) == "features: statistics needs the dialogues' statistics (batch['statistics'])"


@pytest.fixture(scope="module")
def heads_fit(fit_args, tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    assert main(fit_args("score_heads.yaml", root)) == 0
    return root


def test_score_heads_task_end_to_end(heads_fit):
    version = run_dir(heads_fit)
    report, rows = check_outputs(version, "score-heads")
    assert report["metrics"]["invalid"] == 0 and "generation" not in rows[0]
    ckpt = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    assert {"heads.weight", "heads.bias"} <= set(ckpt["state_dict"])
    assert ckpt["kokorozoo"]["task"] == "kokorozoo.tasks.score.ScoreHeadsTask"


RELOAD = """
import json, sys, torch
from kokorozoo.data.datamodules import ScoreDataModule, ScoreSample, collate_scores
from kokorozoo.tasks.score import ScoreHeadsTask
task = ScoreHeadsTask.from_export(sys.argv[1])
dm = ScoreDataModule(max_length=768, limit_test=3, eval_batch_size=3)
dm.connect(task.tokenizer)
dm.setup("test")
with torch.no_grad():
    batch = next(iter(dm.test_dataloader()))
    print(json.dumps(task.item_logits(batch["prompt"], batch["statistics"]).tolist()))
"""


@pytest.fixture(scope="module")
def statistics_heads_fit(fit_args, tmp_path_factory):
    root = tmp_path_factory.mktemp("heads-statistics")
    assert main(fit_args("score_heads.yaml", root, "--model.init_args.features=statistics")) == 0
    return root


@pytest.mark.parametrize("features", ["none", "statistics"])
def test_heads_export_reload_in_a_fresh_process_predicts_the_same(features, request, score_batch, tmp_path):
    from kokorozoo.tasks.model_files import load_task

    fit = request.getfixturevalue("heads_fit" if features == "none" else "statistics_heads_fit")
    ckpt = next((run_dir(fit) / "checkpoints").glob("best-*.ckpt"))
    out = tmp_path / "export"
    assert main(["export", str(ckpt), str(out)]) == 0
    assert (out / "adapter_model.safetensors").exists() and (out / HEADS_FILE).exists()
    assert json.loads((out / "kokorozoo.json").read_text())["heads"]["file"] == HEADS_FILE

    task = load_task(ckpt)
    assert task.hparams.features == features
    if features == "statistics":  # the standardisation travels in the checkpoint, not refitted
        saved = torch.load(ckpt, weights_only=True)["state_dict"]
        assert torch.equal(saved["statistics_mean"], task.statistics_mean) and saved["statistics_mean"].abs().sum() > 0
    with torch.no_grad():
        here = task.item_logits(score_batch[1]["prompt"], score_batch[1]["statistics"])
    proc = subprocess.run(
        [sys.executable, "-c", RELOAD, str(out)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    there = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(there, here, atol=1e-6, rtol=1e-6)
    assert torch.equal(there.argmax(-1), here.argmax(-1))


#: The heads' predictions from an export with plain transformers + peft, following only what the
#: export's kokorozoo.json and model card say (kokorozoo itself cannot be imported here).
WITHOUT_KOKOROZOO = """
import json, sys
sys.modules["kokorozoo"] = None  # any import of kokorozoo fails
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

folder, root, ids = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
info = json.load(open(f"{folder}/kokorozoo.json"))
base_name = json.load(open(f"{folder}/adapter_config.json"))["base_model_name_or_path"]
how = info["heads"]["input"]
tokenizer = AutoTokenizer.from_pretrained(folder)
base = AutoModelForCausalLM.from_pretrained(
    base_name, quantization_config=BitsAndBytesConfig.from_dict(info["quantization_config"]), dtype=torch.float32
)
model = PeftModel.from_pretrained(base, folder).eval()
heads = load_file(f"{folder}/{info['heads']['file']}")
out = {}
for dialogue_id in ids:
    utterances = json.load(open(f"{root}/{dialogue_id}.json", encoding="utf-8"))["dialogue"]
    turns = []
    for u in utterances:  # one speaker's consecutive utterances are one turn, joined with a newline
        role = {"client": "user", "counselor": "assistant"}[u["role"]]
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\\n" + u["utterance"]
        else:
            turns.append({"role": role, "content": u["utterance"]})
    system = [{"role": "system", "content": how["system_prompt"]}] if how["system_prompt"] else []
    for first in range(len(turns)):  # drop the oldest whole turns until prompt and answer fit
        messages = system + turns[first:] + [{"role": "user", "content": how["instruction"]}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        if len(prompt) + how["answer_room"] <= how["max_length"]:
            break
    with torch.no_grad():
        hidden = model(torch.tensor([prompt]), output_hidden_states=True).hidden_states[-1][0, -1]
    logits = (hidden.float() @ heads["weight"].T + heads["bias"]).view(20, 6)
    out[dialogue_id] = logits.tolist()
print(json.dumps(out))
"""


def test_an_export_stands_alone_its_heads_reproduced_without_kokorozoo(heads_fit, score_batch, tmp_path):
    """The export names its base model, its quantization, its licence and its figures, and a
    user with transformers + peft alone gets the heads' predictions from it."""
    from kokorozoo.data import find_root
    from kokorozoo.tasks.model_files import load_task

    version = run_dir(heads_fit)
    report = json.loads((version / "metrics.json").read_text())
    ckpt = Path(report["checkpoint"])
    out = tmp_path / "export"
    assert main(["export", str(ckpt), str(out)]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "license: cc-by-nc-nd-4.0" in card and "CC BY-NC-ND 4.0" in card
    assert "UEC-InabaLab/KokoroChat" in card and "library_name: peft" in card
    model_row = next(line for line in card.splitlines() if line.startswith("| model |"))
    assert model_row == f"| model | {report['metrics']['acc']:.2f} | {report['metrics']['acc_soft']:.2f} | " \
        f"{report['metrics']['mae']:.4f} | {report['metrics']['invalid']:.0f} |"  # fmt: skip
    assert any(line.startswith("| baseline |") for line in card.splitlines())
    info = json.loads((out / "kokorozoo.json").read_text())
    assert info["quantization_config"]["bnb_4bit_quant_type"] == "nf4"
    assert info["heads"]["input"]["max_length"] == 768 and info["heads"]["input"]["answer_room"] > 40
    assert not (out / "generation_config.json").exists()  # the heads do not generate

    dm, batch = score_batch
    with torch.no_grad():
        here = load_task(ckpt).item_logits(batch["prompt"])
    ids = batch["dialogue_ids"]
    proc = subprocess.run([sys.executable, "-c", WITHOUT_KOKOROZOO, str(out), str(find_root()), ",".join(ids)],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    torch.testing.assert_close(torch.tensor([there[i] for i in ids]), here, atol=2e-3, rtol=0)
    rows = {r["dialogue_id"]: r for r in map(json.loads, (version / "predictions.jsonl").read_text().splitlines())}
    assert [torch.tensor(there[i]).argmax(-1).tolist() for i in ids] == [rows[i]["predicted"] for i in ids]


# -- the paper's configs ---------------------------------------------------------------------


@pytest.mark.parametrize("variant, task", [("score", "ScoreTask"), ("score_heads", "ScoreHeadsTask")])
def test_paper_configs_hold_the_papers_settings(variant, task, paper_config):
    cfg = paper_config(variant)
    model, data, trainer = cfg["model"]["init_args"], cfg["data"]["init_args"], cfg["trainer"]
    assert cfg["model"]["class_path"].endswith(task) and cfg["data"]["class_path"].endswith("ScoreDataModule")
    assert (model["optimizer"], model["lr"], model["warmup_steps"]) == ("adamw_torch_fused", 2e-4, 100)
    assert data["batch_size"] * trainer["accumulate_grad_batches"] == 4  # the paper's batch in micro-batches
    assert trainer["max_epochs"] == 4 and trainer["check_val_every_n_epoch"] == 1
    assert trainer["val_check_interval"] in (None, 1.0)  # validation once per epoch
    cls = ScoreTask if task == "ScoreTask" else ScoreHeadsTask
    assert (cls.monitor, cls.mode) == ("val_acc", "max")  # the best checkpoint by highest ACC


def test_heads_that_learned_nothing_predict_each_items_mode(small_tiny, score_batch, kokorochat):
    """Biases start at the training part's priors (weights at zero): before any step the heads are
    the mode baseline, and their distribution is the items' training frequencies."""
    from kokorozoo.metrics import item_modes

    task = ScoreHeadsTask(tiny=small_tiny, quantization="none", compute_dtype="float32")
    task.configure_model()
    dm, batch = score_batch
    train_scores = dm.train_scores()
    task._start_at_priors(train_scores)
    with torch.no_grad():
        predicted, rows = task.eval().infer(batch)
    assert torch.equal(predicted, item_modes(train_scores).float().expand_as(predicted))
    frequencies = torch.nn.functional.one_hot(train_scores, 6).float().mean(0)
    torch.testing.assert_close(torch.tensor(rows[0]["distribution"]), frequencies, atol=1e-3, rtol=0)


# -- the test paths in seconds: a real Trainer.test on a tiny in-memory Llama (or stubbed answers) ----
# Every number of the report and every row of the file against tests/_references.py; the data is
# chosen so that each rule is exercised: predictions off by 0, 1, 2 and more, invalid answers, a tie
# in the baseline's mode, left-padded prompts of different lengths.

#: Gold scores of six test dialogues (every level 0-5 occurs in every item).
TEST_GOLD = [[(i + d) % 6 for i in range(20)] for d in range(6)]
#: A training part whose per-item modes are known: item 0 ties 1 and 4 (the smaller, 1, wins),
#: the others' mode is 3 (4 in item 1), so the baseline is off by 0, 1, 2 and more on TEST_GOLD.
TRAIN = [[1] + [4] + [3] * 18, [1] + [4] + [3] * 18, [4] + [4] + [3] * 18, [4] + [0] + [3] * 18, [5] * 20]
TRAIN_MODES = [1, 4] + [3] * 18


def score_samples(lengths=(5, 9, 4, 7, 6, 8)):
    """Six dialogues whose prompts differ in length (batches are left-padded) and in tokens."""
    generator = torch.Generator().manual_seed(1)
    samples = []
    for d, (length, gold) in enumerate(zip(lengths, TEST_GOLD)):
        prompt = torch.randint(1, 64, (length,), generator=generator).tolist()
        samples.append(ScoreSample(f"d{d}", prompt + [PAD, PAD], [-100] * length + [1, 2], length, gold))
    return samples


def collate(samples):
    return collate_scores(samples, PAD)


#: The non-neural baseline's distributions for the six test dialogues, as the stub below gives them.
CLASSICAL = torch.softmax(torch.randn(6, 20, 6, generator=torch.Generator().manual_seed(5)) * 2, -1)


@pytest.fixture
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
    assert [r["dialogue_id"] for r in rows] == [f"d{d}" for d in range(6)] and [r["gold"] for r in rows] == TEST_GOLD
    gold, pred = score_arrays(rows)
    model = reference_scores(gold, pred)
    assert report["baseline"]["modes"] == dict(zip(ITEM_NAMES, TRAIN_MODES))
    assert reference_modes(np.array(TRAIN)).tolist() == TRAIN_MODES
    baseline = reference_scores(gold, np.broadcast_to(np.array(TRAIN_MODES, dtype=float), gold.shape))
    classical = reference_by_rule(gold, CLASSICAL.numpy())
    check_sections(report, logged, [("metrics", "", "test", model), ("baseline", "baseline_", "test_baseline", baseline),
                                    ("classical", "classical_", "test_classical", classical)])  # fmt: skip
    assert report["rules"]["classical"] == OWN_RULE and report["rules"]["baseline"] == "the per-item mode"
    np.testing.assert_allclose([r["classical_distribution"] for r in rows], CLASSICAL.numpy(), rtol=0, atol=1e-6)
    assert report["split"] == "random"
    invalid = int(np.isnan(pred).sum())
    assert report["metrics"]["invalid"] == invalid and logged["test_invalid"] == invalid
    assert set(report["metrics"]) == {"acc", "acc_soft", "mae", "invalid"}


@pytest.mark.mutation
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
    check_sections(
        report, logged, [("by_rule", "by_rule_", "test_by_rule", reference_by_rule(np.array(TEST_GOLD), distributions))]
    )
    assert report["rules"]["by_rule"] == OWN_RULE and report["rules"]["metrics"].startswith("argmax")
    [(split, tested)] = classical_baseline  # fitted on the datamodule's split, for the tested dialogues
    assert tested == [f"d{d}" for d in range(6)] and [d.id for d in split.train] == ["d0"]
    # the run exercises every rule: predictions off by 0, 1, 2 and more
    gold, pred = score_arrays(rows)
    assert {0, 1, 2, 3} <= set(np.minimum(np.abs(pred - gold), 3).astype(int).ravel().tolist())
    check_score_report(report, rows, logged, "score-heads")


@pytest.mark.mutation
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


@pytest.mark.mutation
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
        torch.testing.assert_close(
            task.item_logits(batch["prompt"], batch["statistics"]), expected, atol=1e-4, rtol=1e-4
        )
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


@pytest.mark.mutation
def test_constrained_test_path_reports_the_digits_distributions(tmp_path, classical_baseline):
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
    values = [
        i for i, c in enumerate(format_scores(TRAIN_MODES)) if c.isdigit() and format_scores(TRAIN_MODES)[i - 1] == " "
    ]
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
    check_sections(
        report, logged, [("by_rule", "by_rule_", "test_by_rule", reference_by_rule(np.array(TEST_GOLD), distributions))]
    )
    assert report["rules"]["metrics"].startswith("argmax of the six digits") and report["rules"]["by_rule"] == OWN_RULE
    check_score_report(report, rows, logged, "score")


#: Text answers: whole and right, whole and off by one or two, cut short, unreadable, repeated
#: with a conflict: parsed to integers with None where an item is invalid.
ANSWERS = [
    format_scores(TEST_GOLD[0]),
    format_scores([min(g + 1, 5) for g in TEST_GOLD[1]]),
    format_scores([max(g - 2, 0) for g in TEST_GOLD[2]]),
    "\n".join(format_scores(TEST_GOLD[3]).splitlines()[:7]),
    "I cannot rate this dialogue.",
    format_scores(TEST_GOLD[5]) + "\nD4: 0",
]


@pytest.mark.parametrize(
    "accelerator",
    ["cpu", pytest.param("gpu", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))],
)
@pytest.mark.mutation
def test_text_test_path_reports_what_its_answers_parse_to(tmp_path, accelerator, classical_baseline):
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
    assert rows[0]["predicted"] == TEST_GOLD[0] and rows[3]["predicted"][7:] == [None] * 13
    assert rows[4]["predicted"] == [None] * 20 and rows[5]["predicted"][3] is None
    report = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    check_score_report(report, rows, logged, "score")
    assert report["metrics"]["invalid"] == 13 + 20 + 1
    assert "by_rule" not in report and "by_rule" not in report["rules"]  # a text answer has no distribution


@pytest.mark.mutation
def test_score_test_needs_the_training_scores_for_its_baseline(tmp_path):
    task = ScoreTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path))
    task.model = torch.nn.Linear(1, 1)
    task.generate = lambda prompt: ANSWERS[:2]
    message = r"^ScoreTask is tested with a ScoreDataModule \(for the baseline\)$"
    with pytest.raises(RuntimeError, match=message):
        task.on_test_epoch_start()  # no trainer at all
    with pytest.raises(RuntimeError, match=message):
        trainer(tmp_path).test(task, datamodule=ScoreData(score_samples()[:2], collate), verbose=False)


@pytest.mark.mutation
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
    expected = reference_scores(np.array(TEST_GOLD, dtype=float), pred)
    for key in ("acc", "acc_soft", "mae"):
        assert logged[f"val_{key}"] == pytest.approx(float(expected[key].mean()), abs=1e-4), key
    assert logged["val_invalid"] == 0 and logged["val_loss"] > 0


@pytest.mark.mutation
def test_heads_report_by_rule_for_a_single_dialogue(tmp_path, classical_baseline):
    model = tiny_llama()
    task = ScoreHeadsTask(quantization="none", compute_dtype="float32", lora=None, output_dir=str(tmp_path))
    task.model = model
    task.configure_heads(type("Backbone", (), {"model": model})())
    trainer(tmp_path).test(task, datamodule=ScoreData(score_samples()[:1], collate, TRAIN), verbose=False)
    report = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert report["dialogues"] == 1 and set(report["by_rule"]) == {"acc", "acc_soft", "mae"}

"""Run folders in the exact schema the tasks write, for the report tests."""

import json
import math
import random
import re
from pathlib import Path

import torch

from kokorozoo.data import ITEM_NAMES, dialogue_turns, response_split, score_split
from kokorozoo.metrics import constant_predictions, item_modes, score_metrics, text_metrics

METRICS = ("acc", "acc_soft", "mae")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_score_run(folder: Path, kokorochat, seed: int, dialogues: int = 40, more_baselines: bool = False) -> Path:
    """What ``ScoreTask``'s test writes, for a model that is off by one on a third of the items
    and unparsable on 3% of them; ``more_baselines`` adds what the schema is growing (a
    ``classical`` row, its per-item columns, ``split`` and ``rules``)."""
    split = score_split(kokorochat, seed=seed)
    test = split.test[:dialogues]
    gold = torch.tensor([d.feedback.items for d in test])
    rng = torch.Generator().manual_seed(seed)
    preds = (
        (gold + torch.randint(-1, 2, gold.shape, generator=rng) * (torch.rand(gold.shape, generator=rng) < 0.35))
        .clamp(0, 5)
        .float()
    )
    preds[torch.rand(gold.shape, generator=rng) < 0.03] = math.nan
    modes = item_modes(torch.tensor([d.feedback.items for d in split.train]))
    systems_ = {"": preds, "baseline_": constant_predictions(modes, len(gold))}
    if more_baselines:
        systems_["classical_"] = (gold + torch.randint(-1, 2, gold.shape, generator=rng)).clamp(0, 5).float()
    metrics = {}
    for prefix, predicted in systems_.items():
        collection = score_metrics()
        collection.update(predicted, gold)
        metrics[prefix] = (collection, {k: float(v) for k, v in collection.compute().items()})
    model = {**metrics[""][1], "invalid": metrics[""][0]["acc"].invalid_count()}
    per_item = {
        name: {f"{p}{k}": metrics[p][0][k].per_item().tolist()[i] for p in systems_ for k in METRICS}
        for i, name in enumerate(ITEM_NAMES)
    }
    report = {"task": "score", "seed": seed, "dialogues": len(test), "metrics": model,
              "baseline": {**metrics["baseline_"][1], "modes": dict(zip(ITEM_NAMES, modes.tolist()))},
              "per_item": per_item}  # fmt: skip
    if more_baselines:
        report |= {"classical": metrics["classical_"][1], "split": "score_split 8:1:1, test tenth fixed",
                   "rules": {"acc": "mode", "acc_soft": "mode", "mae": "median"}}  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    rows = [
        {"dialogue_id": d.id, "gold": g.tolist(), "predicted": [None if math.isnan(v) else int(v) for v in p.tolist()],
         "generation": "..."}
        for d, g, p in zip(test, gold, preds)
    ]  # fmt: skip
    write_jsonl(folder / "predictions.jsonl", rows)
    return folder


def write_response_run(folder: Path, kokorochat, subset: str, turns: int = 60, baselines: bool = False) -> Path:
    """What ``ResponseTask``'s test writes, for a "model" that answers each test turn with the
    first sentence of the reference or with another dialogue's counselor turn."""
    test = response_split(kokorochat, subset).test
    rng = random.Random(subset)
    candidates = [
        (d.id, i, t.text, turns_[i - 1].text)
        for d in test[:30]
        for turns_ in [dialogue_turns(d)]
        for i, t in enumerate(turns_)
        if i > 0 and t.role == "counselor"
    ]
    picked = sorted(rng.sample(candidates, turns), key=lambda c: (int(c[0]), c[1]))
    others = [c[2] for c in candidates]
    rows = [
        {"dialogue_id": d, "turn_index": i, "history_turns": i, "previous": previous, "reference": ref,
         "generation": re.split(r"(?<=[。？])", ref)[0] if rng.random() < 0.5 else rng.choice(others)}
        for d, i, ref, previous in picked
    ]  # fmt: skip
    metrics = text_metrics("char")
    metrics.update([r["generation"] for r in rows], [r["reference"] for r in rows])
    report = {"task": "response", "turns": len(rows), "tokenize": "char",
              "metrics": {k: float(v) for k, v in metrics.compute().items()}}  # fmt: skip
    if baselines:
        echo = text_metrics("char")
        echo.update(["そうなんですね。"] * len(rows), [r["reference"] for r in rows])
        report["baselines"] = {"echo": {k: float(v) for k, v in echo.compute().items()}}
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    write_jsonl(folder / "generations.jsonl", rows)
    return folder

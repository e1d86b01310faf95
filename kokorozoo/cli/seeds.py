"""Run a score-prediction config once per seed and report mean ± std, as the paper's Table 5 does
(five seeds; the test tenth is the same for all, the seed draws train/validation and initializes
the adapters), with the constant per-item-mode baseline and the non-neural baseline (``classical``,
each metric under its rule) beside the model, and the model's figures under each metric's rule
(``by_rule``) when it gives distributions (score heads, constrained text scoring).

Run five seeds, then aggregate (anything after ``--`` goes to every ``kokorozoo fit``)::

    kokorozoo seeds --config configs/paper/score.yaml --seeds 0 1 2 3 4 --out runs/seeds/score
    kokorozoo seeds --config configs/score.yaml --seeds 0 1 -- --trainer.max_epochs=2

Aggregate runs that already exist (``metrics.json`` files, or folders searched for them)::

    kokorozoo seeds --aggregate runs/seeds/score [--out DIR]

Each seed runs ``kokorozoo fit --config CONFIG --seed_everything=S --data.init_args.seed=S`` in
its own process, writing everything (checkpoints, logs, ``predictions.jsonl``, ``metrics.json``)
to ``OUT/seed_S/``. The summary goes to ``OUT/summary.json`` and ``OUT/summary.csv`` (one row a
seed, then ``mean`` and ``std``) and is printed as a table. ``std`` is the sample standard
deviation (n - 1), the usual choice for "mean ± std over runs".
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from kokorozoo.errors import UsageError

PREFIXES = {"": "", "baseline_": "base ", "classical_": "classical ", "by_rule_": "by rule "}
PAPER_SEEDS = (0, 1, 2, 3, 4)


def header(column: str) -> str:
    from kokorozoo.evaluation.results import LABELS  # the schema reaches torch: not for --help

    prefix = next(p for p in sorted(PREFIXES, key=len, reverse=True) if column.startswith(p))
    return PREFIXES[prefix] + LABELS[column[len(prefix) :]]


def find_metrics(paths: Iterable[str | Path]) -> list[Path]:
    """``metrics.json`` files: each path is one, or a folder searched recursively (sorted)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(path.rglob("metrics.json"))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


def format_table(result: dict) -> str:
    """The runs and their mean ± std as a fixed-width table (ACC in %, MAE on the 0-5 scale), one
    row a run and a column a figure, headed by the split."""
    from kokorozoo.evaluation.results import format_value

    summary, columns = result["summary"], result["columns"]
    cells = [["seed", *map(header, columns)]]
    for row in result["runs"]:
        cells.append([str(row["seed"]), *(format_value(c, row[c]) for c in columns)])
    cells.append(
        [
            "mean ± std",
            *(f"{format_value(c, summary[c]['mean'])} ± {format_value(c, summary[c]['std'])}" for c in columns),
        ]
    )
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    table = "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in cells)
    return f"split: {result['split']}\n{table}"


def write_summary(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    with open(out / "summary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        columns = result["columns"]
        writer.writerow(["seed", *columns])
        for row in result["runs"]:
            writer.writerow([row["seed"], *(row[c] for c in columns)])
        for stat in ("mean", "std"):
            writer.writerow([stat, *(result["summary"][c][stat] for c in columns)])


def fit_command(config: str, seed: int, out: Path, extra: Sequence[str]) -> list[str]:
    """The ``kokorozoo fit`` of one seed; ``extra`` comes last so it can override anything."""
    folder = out / f"seed_{seed}"
    return [
        sys.executable, "-m", "kokorozoo.cli", "fit", "--config", config,
        f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
        f"--trainer.default_root_dir={folder}", f"--model.init_args.output_dir={folder}",
        *extra,
    ]  # fmt: skip


def _seeds(args: argparse.Namespace) -> int:
    failed = []
    if args.aggregate:
        out = Path(args.out) if args.out else None
        paths = args.aggregate
    else:
        out = Path(args.out or Path("runs") / "seeds" / Path(args.config).stem)
        for seed in args.seeds:
            print(f"== seed {seed}: {out / f'seed_{seed}'}", flush=True)
            if subprocess.run(fit_command(args.config, seed, out, args.fit_args)).returncode != 0:
                failed.append(seed)
        paths = [out / f"seed_{s}" / "metrics.json" for s in args.seeds if s not in failed]
    try:
        from kokorozoo.evaluation.results import summarize_score_runs

        result = summarize_score_runs(find_metrics(paths))
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    print(format_table(result))
    if out is not None:
        write_summary(result, out)
        print(f"summary: {out / 'summary.json'}, {out / 'summary.csv'}")
    if failed:
        print(f"kokorozoo seeds: seeds {failed} failed (not in the summary)", file=sys.stderr)
        return 1
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``kokorozoo seeds``."""
    seeds = commands.add_parser(
        "seeds",
        help="fit a score config once per seed and report mean ± std",
        description="Fit a score-prediction config once per seed, then print and save mean ± std of ACC, "
        "ACC_soft and MAE with the per-item-mode and non-neural baselines beside them. Options after -- go to "
        "every kokorozoo fit.",
    )
    what = seeds.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="the config to fit (e.g. configs/paper/score.yaml)")
    what.add_argument(
        "--aggregate", nargs="+", metavar="PATH", help="only aggregate: metrics.json files or folders holding them"
    )
    seeds.add_argument("--seeds", type=int, nargs="+", default=list(PAPER_SEEDS), help="default: 0 1 2 3 4")
    seeds.add_argument("--out", help="where runs and the summary go (default: runs/seeds/<config name>)")
    seeds.add_argument("fit_args", nargs="*", metavar="-- FIT_OPTION", help="given to every kokorozoo fit")
    seeds.set_defaults(handler=_seeds)

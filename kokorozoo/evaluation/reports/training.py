"""The training section of a run report: how each run was set up (from the ``config.yaml`` the
run saved) and how it trained (the loss, validation figures and learning rate from its
``metrics.csv``). A run folder without them (a test of someone else's checkpoint, rows written by
another tool) simply has no such section."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kokorozoo.evaluation.reports.page import Page, new_figure
from kokorozoo.evaluation.reports.runs import Group, describe

#: What the configuration table shows, by its place in config.yaml.
CONFIG_ROWS = (
    ("task", ("model", "class_path")),
    ("backbone", ("model", "init_args", "backbone")),
    ("quantization", ("model", "init_args", "quantization")),
    ("compute dtype", ("model", "init_args", "compute_dtype")),
    ("LoRA", ("model", "init_args", "lora")),
    ("optimizer", ("model", "init_args", "optimizer")),
    ("learning rate", ("model", "init_args", "lr")),
    ("warm-up steps", ("model", "init_args", "warmup_steps")),
    ("data", ("data", "class_path")),
    ("max length", ("data", "init_args", "max_length")),
    ("batch size", ("data", "init_args", "batch_size")),
    ("gradient accumulation", ("trainer", "accumulate_grad_batches")),
    ("epochs", ("trainer", "max_epochs")),
    ("max steps", ("trainer", "max_steps")),
    ("precision", ("trainer", "precision")),
    ("devices", ("trainer", "devices")),
    ("seed", ("seed_everything",)),
)
CONFIG_FILE, CURVES_FILE = "config.yaml", "metrics.csv"


def read_config(folder: Path) -> dict[str, Any] | None:
    path = folder / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return config if isinstance(config, dict) else None


def read_curves(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every logged figure of ``metrics.csv`` as (step, value) pairs, empty cells left out."""
    path = folder / CURVES_FILE
    if not path.is_file():
        return {}
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            for name, value in row.items():
                if name in ("step", "epoch") or not value or not step:
                    continue
                try:
                    curves.setdefault(name, []).append((int(float(step)), float(value)))
                except ValueError:
                    continue
    return curves


def _setting(config: dict, path: Sequence[str]) -> Any:
    value: Any = config
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def training_section(page: Page, groups: Sequence[Group]) -> None:
    runs = [(group, run) for group in groups for run in group.runs]
    configs = {run.path: read_config(run.path) for _, run in runs}
    curves = {run.path: read_curves(run.path) for _, run in runs}
    if not any(configs.values()) and not any(curves.values()):
        return
    page.heading("Training")
    shown = [(group, run) for group, run in runs if configs[run.path]]
    if shown:
        labels = [group.label if len(group.runs) == 1 else f"{group.label}: seed {run.seed}" for group, run in shown]
        rows = []
        for name, path in CONFIG_ROWS:
            values = [_setting(configs[run.path], path) for _, run in shown]
            if any(v is not None for v in values):
                rows.append([name, *("–" if v is None else describe(v) for v in values)])
        page.table(["setting", *labels], rows, "How each run was set up (its config.yaml)", long_columns=())
    plotted = [(group, run) for group, run in runs if any(k in curves[run.path] for k in ("train_loss", "val_loss"))]
    if not plotted:
        return
    fig = new_figure(13, 3.8)
    loss_ax, lr_ax = fig.subplots(1, 2)
    for group, run in plotted:
        label = group.label if len(group.runs) == 1 else f"{group.label} (seed {run.seed})"
        for name, style in (("train_loss", "-"), ("val_loss", "o--")):
            if points := curves[run.path].get(name):
                loss_ax.plot(*zip(*points), style, label=f"{label}: {name}", markersize=4)
        for name, points in curves[run.path].items():
            if name.startswith("lr-"):
                lr_ax.plot(*zip(*points), label=f"{label}: {name}")
    loss_ax.set(xlabel="step", ylabel="loss", title="Training and validation loss")
    lr_ax.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    loss_ax.set_ylim(bottom=0)
    page.figure(fig, "training_curves", "Loss and learning rate by step, from each run's metrics.csv.")

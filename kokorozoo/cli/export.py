"""``kokorozoo export CHECKPOINT OUT_DIR``: a checkpoint's adapter as a PEFT folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from kokorozoo.cli.common import output_folder
from kokorozoo.errors import UsageError


def _export(args: argparse.Namespace) -> int:
    from kokorozoo.evaluation.model_card import write_model_card
    from kokorozoo.tasks.model_files import read_model

    out_dir = output_folder(args.out_dir, args.overwrite)  # checked, not yet made
    record = read_model(args.checkpoint)  # every problem found before anything is written
    if record.is_export:
        raise UsageError(f"{args.checkpoint}: already an export folder; kokorozoo export reads a checkpoint (.ckpt)")
    task = record.build()
    out = task.export(out_dir)
    write_model_card(out, _test_result(args.checkpoint))
    print(f"wrote the PEFT adapter, tokenizer, kokorozoo.json and model card of {args.checkpoint} to {out}")
    return 0


def _test_result(checkpoint: str):
    """The test result of ``checkpoint`` from its run folder's ``metrics.json``, when that test
    read this very checkpoint (a test of another checkpoint of the run says nothing about it)."""
    from kokorozoo.evaluation.results import ResultError, read_result
    from kokorozoo.runs import run_folder

    folder = run_folder(checkpoint)
    if folder is None or not (folder / "metrics.json").is_file():
        return None
    try:
        result = read_result(folder / "metrics.json")
    except ResultError:
        return None
    tested = result.checkpoint and Path(result.checkpoint).resolve() == Path(checkpoint).resolve()
    return result if tested else None


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``kokorozoo export``."""
    export = commands.add_parser(
        "export",
        help="write a checkpoint's adapter as a PEFT folder",
        description="Write the trained adapter of a kokorozoo checkpoint as a PEFT adapter folder (load it with "
        "PeftModel.from_pretrained(base_model, OUT_DIR)), with the tokenizer, generation_config.json (a task "
        "that generates), the heads (safetensors), kokorozoo.json (the task, its settings, the quantization "
        "and how the heads read the model) and README.md, the model card: the data's licence (KokoroChat, "
        "CC BY-NC-ND 4.0), the checkpoint's test figures beside the baselines, the prompt format and how to "
        "load it with plain transformers + peft.",
    )
    export.add_argument("checkpoint", help="a .ckpt written by kokorozoo fit (e.g. best-*.ckpt or last.ckpt)")
    export.add_argument("out_dir", help="the folder to write (new or empty)")
    export.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    export.set_defaults(handler=_export)

"""``kokorozoo export CHECKPOINT OUT_DIR``: a checkpoint's adapter as a PEFT folder."""

from __future__ import annotations

import argparse

from kokorozoo.cli.common import output_folder
from kokorozoo.errors import UsageError


def _export(args: argparse.Namespace) -> int:
    from kokorozoo.tasks.base import load_task

    out_dir = output_folder(args.out_dir, args.overwrite)
    try:
        task = load_task(args.checkpoint)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = task.export(out_dir)
    print(f"wrote the PEFT adapter, tokenizer and kokorozoo.json of {args.checkpoint} to {out}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``kokorozoo export``."""
    export = commands.add_parser(
        "export",
        help="write a checkpoint's adapter as a PEFT folder",
        description="Write the trained adapter of a kokorozoo checkpoint as a PEFT adapter folder (load it with "
        "PeftModel.from_pretrained(base_model, OUT_DIR)), with the tokenizer and kokorozoo.json (the task and "
        "its settings).",
    )
    export.add_argument("checkpoint", help="a .ckpt written by kokorozoo fit (e.g. best-*.ckpt or last.ckpt)")
    export.add_argument("out_dir", help="the folder to write (new or empty)")
    export.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    export.set_defaults(handler=_export)

"""The model card of an export (``README.md``, read by the Hugging Face hub and by people): what
the model is, its data's licence (KokoroChat is CC BY-NC-ND 4.0), its test figures beside the
baselines, its prompt format and how to load it with plain transformers + peft. Built with
``huggingface_hub.ModelCard`` from ``templates/model_card.md`` and what the export and the run's
``metrics.json`` say; nothing in it is typed by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from kokorozoo.evaluation.results import Result, format_value, label

DATASET = "UEC-InabaLab/KokoroChat"
LICENSE = "cc-by-nc-nd-4.0"
CARD_FILE = "README.md"
#: Prompt settings the card shows once, under "Prompt format".
PROMPT_KEYS = ("instruction", "system_prompt", "max_length")

#: What each kokorozoo task is, in a reader's words.
TASK_SUMMARIES = {
    "response": "Japanese counselor response model (the next counselor turn of a counseling dialogue)",
    "score": "client-feedback score predictor (the 20 KokoroChat items, 0-5, written as text)",
    "score-heads": "client-feedback score predictor (the 20 KokoroChat items, 0-5, from 20 classification heads)",
}

CLIENT_SUMMARY = "Japanese simulated-client model (the next client turn of a counseling dialogue)"


def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("kokorozoo.evaluation", "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return environment.get_template("model_card.md")


def _hub_name(base: str) -> str | None:
    """The base model's hub name, or None for a local folder (the tiny model, a path)."""
    return None if Path(base).exists() or base.count("/") != 1 else base


def _results(result: Result) -> tuple[list[str], list[tuple[str, list[str]]]]:
    systems = result.systems()
    metrics = [m for m in result.metrics if m in next(iter(systems.values()))]
    rows = [(name, [format_value(m, values.get(m)) for m in metrics]) for name, values in systems.items()]
    return [label(m) for m in metrics], rows


def write_model_card(folder: str | Path, result: Result | None = None) -> Path:
    """Write ``folder/README.md`` for the export in ``folder`` (``kokorozoo.json`` and
    ``adapter_config.json`` beside it) and, when given, the test result of its checkpoint."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    info = json.loads((folder / "kokorozoo.json").read_text(encoding="utf-8"))
    adapter = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    base = adapter["base_model_name_or_path"]
    settings = info["settings"]
    task = result.task if result is not None else info.get("name", info["task"].rpartition(".")[2])
    head = None
    for name in ("heads", "head"):
        if name in info:
            described = info[name]
            head = {
                "name": name,
                "file": described["file"],
                "count": "20 classification heads" if name == "heads" else "a classification head",
                "logits": described.get("logits", ""),
                "reads": described.get("reads", ""),
                "input": [(k, v) for k, v in (described.get("input") or {}).items() if k not in PROMPT_KEYS],
            }
    client = (info.get("prompt") or {}).get("role") == "client"
    metric_names, systems = _results(result) if result is not None else ([], [])
    quantization = info.get("quantization_config")
    compute = (quantization or {}).get("bnb_4bit_compute_dtype") or settings.get("compute_dtype", "float32")
    data = ModelCardData(
        base_model=_hub_name(base),
        datasets=[DATASET],
        language=["ja"],
        library_name="peft",
        license=LICENSE,
        pipeline_tag="text-generation" if (folder / "generation_config.json").exists() else None,
        tags=["kokorozoo", "counseling", "lora", *(["qlora"] if quantization else [])],
    )
    body = _template().render(
        title=f"kokorozoo {task}: {folder.name}",
        task_summary=CLIENT_SUMMARY if client else TASK_SUMMARIES.get(task, f"{task} model"),
        client=client,
        base_model=base,
        quantization=quantization,
        compute_dtype=compute if compute in ("float32", "bfloat16", "float16") else "float32",
        head=head,
        systems=systems,
        metric_names=metric_names,
        split=(result.split if result is not None else None) or "random",
        size=f"{result.size} {'turns' if result.turns is not None else 'dialogues'}" if result is not None else "",
        checkpoint=Path(result.checkpoint).name if result is not None and result.checkpoint else "",
        prompt=[(k, "(none)" if v is None else v) for k, v in (info.get("prompt") or {}).items()],
        generates=(folder / "generation_config.json").exists(),
        chat=task == "response",
        folder_name=folder.name,
        training=[(k, json.dumps(v, ensure_ascii=False)) for k, v in _training_settings(settings).items()],
    )
    path = folder / CARD_FILE
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}").save(path)
    return path


def _training_settings(settings: dict[str, Any]) -> dict[str, Any]:
    keep = ("backbone", "quantization", "compute_dtype", "lora", "optimizer", "lr", "warmup_steps", "weight_decay")
    return {k: settings[k] for k in keep if k in settings}

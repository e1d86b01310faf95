"""The one reader of a model a user names: an export folder (``kokorozoo export``) or a
checkpoint (``kokorozoo fit``). ``chat``, ``simulate``, ``test``, ``export`` and ``fit --ckpt_path``
all read models through it.

A model may come from someone else, so everything is checked before a model is built, and each
problem is one line naming the file and the field (``FOLDER/kokorozoo.json: settings.max_length:
expected an integer, got a string``, exit 2):

- ``kokorozoo.json``: valid JSON, a mapping, its ``task`` a *registered* task (core or an
  installed plugin's entry point) and nothing else: the name is looked up, never imported, so a
  folder cannot make kokorozoo import a module; its ``settings`` the task's own, each of its
  type; its ``prompt`` settings of their types;
- the adapter: ``adapter_config.json`` a LoRA config whose rank matches the weights, the weights
  in ``adapter_model.safetensors`` (a pickled ``.bin`` could run code when read: refused);
- the heads file: a safetensors file inside the folder, holding the tensors the task's heads have;
- a local backbone folder with pickled weights only is refused for the same reason;
- checkpoints are unpickled with ``weights_only=True`` (tensors and plain values only).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pickle
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule as Task  # a task, named so: kokorozoo.tasks.base imports this module

from kokorozoo.errors import UsageError
from kokorozoo.registry import TASK_BASE

#: The entry of a checkpoint, and the file of an export folder, where kokorozoo records the task.
CHECKPOINT_KEY = "kokorozoo"
EXPORT_INFO = "kokorozoo.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: The types of the prompt settings a model records (``prompt_settings()`` of the datamodules).
PROMPT_FIELDS: dict[str, Any] = {
    "max_length": int,
    "role": Literal["counselor", "client"],
    "system_prompt": str | None,
    "instruction": str,
}


class ModelFileError(UsageError):
    """A model folder or checkpoint that cannot be used: ``PATH: field: problem``."""

    def __init__(self, path: str | os.PathLike, field: str | None, problem: str):
        super().__init__(f"{path}: {field}: {problem}" if field else f"{path}: {problem}")


@dataclass(frozen=True)
class ModelRecord:
    """What a model folder or checkpoint holds, checked: its task class, the task's settings, the
    prompt settings it was trained with, and (a checkpoint) its contents or (a folder) its
    ``kokorozoo.json``."""

    path: Path
    task: type[Task]
    settings: dict[str, Any]
    prompt: dict[str, Any]
    contents: dict[str, Any]

    @property
    def is_export(self) -> bool:
        return self.path.is_dir()

    def build(self) -> Task:
        """The task, ready to predict."""
        return _build_export(self) if self.is_export else _build_checkpoint(self)


def read_model(path: str | os.PathLike) -> ModelRecord:
    """The export folder or checkpoint at ``path``, checked (see the module's docstring)."""
    path = Path(path)
    if path.is_dir():
        return read_export(path)
    if path.is_file():
        return _checkpoint_record(path, read_checkpoint(path))
    raise ModelFileError(path, None, "no such model folder or checkpoint")


def load_task(checkpoint: str | os.PathLike) -> Task:
    """The task a kokorozoo checkpoint was written by, with its trained tensors loaded."""
    return read_model(checkpoint).build()


def load_export(folder: str | os.PathLike, expected: type[Task] | None = None) -> Task:
    """The task an export folder holds, ready to predict (in a fresh process too); ``expected``:
    the task class (or a base of it) it must hold."""
    record = read_export(Path(folder))
    if expected is not None and not issubclass(record.task, expected):
        raise ModelFileError(
            Path(folder) / EXPORT_INFO, "task", f"holds a {record.task.__name__}, not a {expected.__name__}"
        )
    return record.build()


# -- checkpoints -----------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A kokorozoo checkpoint's contents (on the CPU, tensors and plain values only); one-line
    errors for a missing, truncated, foreign or garbage file, and for one that would run code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, None, "no such checkpoint file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if named := re.search(r"GLOBAL (\S+)", str(e)):  # an object to import and call: what runs code
            raise ModelFileError(
                path,
                None,
                f"refused: it holds a Python object ({named.group(1)}) beyond tensors and plain values, and"
                " unpickling it could run code (kokorozoo reads checkpoints with weights_only=True); use a checkpoint"
                " written by kokorozoo fit",
            ) from None
        raise ModelFileError(path, None, "not a readable checkpoint (truncated or not a checkpoint)") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        raise ModelFileError(
            path, None, f"not a readable checkpoint (truncated or not a checkpoint: {_first(e)})"
        ) from None
    if not isinstance(saved, dict) or not isinstance(saved.get(CHECKPOINT_KEY), dict):
        raise ModelFileError(path, None, f"not a kokorozoo checkpoint (no {CHECKPOINT_KEY!r} entry)")
    if "task" not in saved[CHECKPOINT_KEY]:
        raise ModelFileError(path, f"{CHECKPOINT_KEY}.task", "missing: not a checkpoint written by kokorozoo fit")
    return saved


def _checkpoint_record(path: Path, saved: dict[str, Any]) -> ModelRecord:
    entry = saved[CHECKPOINT_KEY]
    cls = registered_task(entry["task"], path, f"{CHECKPOINT_KEY}.task")
    settings = check_settings(cls, saved.get("hyper_parameters", {}), path, "hyper_parameters")
    check_backbone_folder(settings.get("backbone"), path, "hyper_parameters.backbone")
    prompt = check_prompt(entry.get("prompt"), path, f"{CHECKPOINT_KEY}.prompt")
    if not isinstance(saved.get("state_dict"), dict):
        raise ModelFileError(path, "state_dict", "missing: the checkpoint holds no trained tensors")
    return ModelRecord(path, cls, settings, prompt, saved)


def _build_checkpoint(record: ModelRecord) -> Task:
    task = _instantiate(record)
    task.configure_model()
    try:
        task.on_load_checkpoint(record.contents)
        task.load_state_dict(record.contents["state_dict"], strict=False)
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(record.path, "state_dict", _first(e)) from None
    task.prompt_settings = dict(record.prompt)
    return task.eval()


# -- export folders --------------------------------------------------------------------------------


def read_export(folder: Path) -> ModelRecord:
    """An export folder's ``kokorozoo.json``, adapter and heads, checked; nothing is loaded."""
    info_path = folder / EXPORT_INFO
    if not info_path.is_file():
        raise ModelFileError(
            folder, None, f"not a kokorozoo export (no {EXPORT_INFO}): make one with `kokorozoo export CKPT {folder}`"
        )
    info = _read_json(info_path)
    if "task" not in info:
        raise ModelFileError(info_path, "task", "missing: which task the folder holds")
    cls = registered_task(info["task"], info_path, "task")
    if "settings" not in info:
        raise ModelFileError(info_path, "settings", "missing: the task's settings")
    settings = check_settings(cls, info["settings"], info_path, "settings")
    check_backbone_folder(settings.get("backbone"), info_path, "settings.backbone")
    prompt = check_prompt(info.get("prompt"), info_path, "prompt")
    quantization = info.get("quantization_config")
    if quantization is not None and not isinstance(quantization, dict):
        raise ModelFileError(info_path, "quantization_config", f"expected a mapping, got {_kind(quantization)}")
    _check_adapter(folder, settings)
    if cls.head_name is not None:
        _check_head_file(folder, info, cls.head_name)
    return ModelRecord(folder, cls, settings, prompt, info)


def _build_export(record: ModelRecord) -> Task:
    from peft import PeftModel

    folder = record.path
    task = _instantiate(record)
    backbone = task.load_backbone(lora=False)
    if (folder / ADAPTER_CONFIG).exists():
        backbone.model = PeftModel.from_pretrained(backbone.model, folder)
    task._attach(backbone)
    if task.head_name is not None:
        try:
            task.load_head(folder, record.contents)
        except (KeyError, RuntimeError) as e:
            file = record.contents[task.head_name]["file"]
            raise ModelFileError(folder / file, task.head_name, f"not this task's heads ({_first(e)})") from None
    task.prompt_settings = dict(record.prompt)
    return task.eval()


def _check_adapter(folder: Path, settings: dict[str, Any]) -> None:
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        if settings.get("lora", True) is not None:
            raise ModelFileError(folder, ADAPTER_CONFIG, "missing: the task was trained with a LoRA adapter")
        return
    config = _read_json(config_path)
    if config.get("peft_type") != "LORA":
        raise ModelFileError(
            config_path, "peft_type", f"{config.get('peft_type')!r}: kokorozoo reads LoRA adapters ('LORA') only"
        )
    rank = config.get("r")
    if not _is_int(rank) or rank < 1:
        raise ModelFileError(config_path, "r", f"expected a positive integer (the LoRA rank), got {rank!r}")
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = sorted(p.name for p in folder.glob("adapter_model*.bin"))
        if pickled:
            raise ModelFileError(folder / pickled[0], None, _pickled_weights("the adapter"))
        raise ModelFileError(folder, ADAPTER_WEIGHTS, "missing: the adapter's weights")
    patterns = config.get("rank_pattern") or {}
    for name, shape in _tensor_shapes(weights).items():
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        expected = next((r for pattern, r in patterns.items() if pattern in name), rank)
        got = shape[0] if ".lora_A." in name else shape[-1]
        if got != expected:
            raise ModelFileError(
                config_path, "r", f"{rank} does not match the weights: {name} in {ADAPTER_WEIGHTS} has rank {got}"
            )


def _check_head_file(folder: Path, info: dict[str, Any], head_name: str) -> None:
    info_path = folder / EXPORT_INFO
    head = info.get(head_name)
    if not isinstance(head, dict):
        raise ModelFileError(info_path, head_name, "missing: the task's heads (export the checkpoint again)")
    file = head.get("file")
    if not isinstance(file, str) or not file or Path(file).name != file:
        raise ModelFileError(info_path, f"{head_name}.file", f"expected a file name inside the folder, got {file!r}")
    if not (folder / file).is_file():
        raise ModelFileError(info_path, f"{head_name}.file", f"{file} is not in the folder")
    _tensor_shapes(folder / file)


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    """The tensors of a safetensors file by name, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - safetensors raises its own kinds for a file that is not one
        raise ModelFileError(path, None, f"not a safetensors file ({_first(e)})") from None


def _pickled_weights(what: str) -> str:
    return (
        f"{what} is saved as a pickle (.bin), which could run code when read: kokorozoo reads safetensors"
        " only (save it with save_pretrained(..., safe_serialization=True))"
    )


# -- what the files name ---------------------------------------------------------------------------


def registered_task(class_path: Any, path: str | os.PathLike, field: str) -> type[Task]:
    """The registered task ``class_path`` names (a core task or an installed plugin's): looked up
    among the registered tasks, never imported, so a file cannot make kokorozoo import a module."""
    from kokorozoo.registry import scan_tasks

    if not isinstance(class_path, str) or not class_path:
        raise ModelFileError(path, field, f"expected a task's class path, got {class_path!r}")
    entries = [entry for entry in scan_tasks() if entry.cls is not None and entry.conflict is None]
    for entry in entries:
        if class_path in (entry.class_path, entry.target.replace(":", ".")):
            return entry.cls
    names = ", ".join(entry.class_path for entry in entries)
    raise ModelFileError(
        path, field, f"{class_path!r} is not a registered task ({names}; `kokorozoo tasks` lists them): not imported"
    )


def check_settings(cls: type[Task], settings: Any, path: str | os.PathLike, field: str) -> dict[str, Any]:
    """``settings`` if each is an argument of ``cls`` of its type (LightningCLI's private entries
    such as ``_class_path`` aside); else the first that is not, in one line."""
    if not isinstance(settings, dict):
        raise ModelFileError(path, field, f"expected a mapping of the task's settings, got {_kind(settings)}")
    parameters = task_parameters(cls)
    for name, value in settings.items():
        if not isinstance(name, str) or name.startswith("_"):
            continue
        if name not in parameters:
            raise ModelFileError(path, f"{field}.{name}", f"not a setting of {cls.__name__}")
        _check_type(value, parameters[name], path, f"{field}.{name}")
    return {k: v for k, v in settings.items() if isinstance(k, str) and not k.startswith("_")}


def check_prompt(prompt: Any, path: str | os.PathLike, field: str) -> dict[str, Any]:
    if prompt is None:
        return {}
    if not isinstance(prompt, dict):
        raise ModelFileError(path, field, f"expected a mapping of prompt settings, got {_kind(prompt)}")
    for name, expected in PROMPT_FIELDS.items():
        if name in prompt:
            _check_type(prompt[name], expected, path, f"{field}.{name}")
    return dict(prompt)


def task_parameters(cls: type[Task]) -> dict[str, Any]:
    """The arguments ``cls(...)`` takes with their types, through the ``**kwargs`` each subclass
    passes up to :class:`Task`."""
    parameters: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        hints = typing.get_type_hints(init)
        signature = inspect.signature(init)
        for name, p in signature.parameters.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                parameters.setdefault(name, hints.get(name, Any))
        if (
            not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
            or f"{klass.__module__}.{klass.__qualname__}" == TASK_BASE
        ):
            break
    return parameters


def _check_type(value: Any, expected: Any, path: str | os.PathLike, field: str) -> None:
    """``value`` as JSON would hold a setting of type ``expected`` (ints for floats too), or the
    error naming what came instead; dataclass settings are checked field by field."""
    problem = _type_problem(value, expected, path, field)
    if problem is not None:
        raise ModelFileError(path, field, problem)


def _type_problem(value: Any, expected: Any, path, field) -> str | None:
    origin = typing.get_origin(expected)
    if expected is Any:
        return None
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return None
        problems = [_type_problem(value, option, path, field) for option in options if option is not type(None)]
        return None if None in problems else problems[0]
    if origin is Literal:
        allowed = typing.get_args(expected)
        return None if value in allowed else f"expected one of {', '.join(map(repr, allowed))}, got {value!r}"
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            return f"expected a mapping of {expected.__name__} fields, got {_kind(value)}"
        fields = {f.name: f for f in dataclasses.fields(expected)}
        hints = typing.get_type_hints(expected)
        for name, item in value.items():
            if name not in fields:
                raise ModelFileError(path, f"{field}.{name}", f"not a field of {expected.__name__}")
            _check_type(item, hints.get(name, Any), path, f"{field}.{name}")
        return None
    if expected is type(None):
        return None if value is None else f"expected null, got {_kind(value)}"
    if expected is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {_kind(value)}"
    if expected is int:
        return None if _is_int(value) else f"expected an integer, got {_kind(value)}"
    if expected is float:
        return None if _is_int(value) or isinstance(value, float) else f"expected a number, got {_kind(value)}"
    if expected is str:
        return None if isinstance(value, str) else f"expected a string, got {_kind(value)}"
    if origin in (tuple, list, typing.get_origin(typing.Sequence)):
        return None if isinstance(value, (list, tuple)) else f"expected a list, got {_kind(value)}"
    return None


def _instantiate(record: ModelRecord) -> Task:
    try:
        return record.task(**record.settings)
    except (ValueError, TypeError) as e:
        field = "settings" if record.is_export else "hyper_parameters"
        where = record.path / EXPORT_INFO if record.is_export else record.path
        raise ModelFileError(where, field, _first(e)) from None


def check_backbone_folder(backbone: Any, path: str | os.PathLike, field: str) -> None:
    """A local backbone folder whose weights are pickles only is refused (reading one could run code)."""
    if not isinstance(backbone, str) or not Path(backbone).is_dir():
        return
    folder = Path(backbone)
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.glob("*.bin") if p.name != "training_args.bin")
    if pickled:
        raise ModelFileError(path, field, f"{folder / pickled[0]}: {_pickled_weights('the backbone')}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(path, None, f"not valid JSON ({_first(e)})") from None
    if not isinstance(content, dict):
        raise ModelFileError(path, None, f"expected a JSON object, got {_kind(content)}")
    return content


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    kind = names.get(type(value), f"a {type(value).__name__}")
    return f"{kind} ({value!r})" if isinstance(value, (str, int, float)) and len(repr(value)) < 40 else kind


def _first(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

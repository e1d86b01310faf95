"""``kokorozoo serve``: a trained response model behind an OpenAI-compatible API
(``/v1/chat/completions``, streamed or not, and ``/v1/models``) on LitServe, so chat front-ends and
kokorozoo's own endpoint client (:mod:`kokorozoo.endpoints.client`) can use it.

A request is answered as ``kokorozoo chat`` answers the same history: the messages become turns
(``assistant`` the model's own role, ``user`` the other side's), prompted as the model was trained
(its system prompt, unless the request brings one, and its length), decoded greedily with the
model's ``max_new_tokens`` unless the request sets ``temperature`` or ``max_tokens``. What the
model cannot do (tools, a response format, stop strings, several choices) is refused with 400.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kokorozoo.generation import Sampling
from kokorozoo.records import Turn

#: Request fields a kokorozoo model cannot honour: refused, never silently ignored.
UNSUPPORTED = ("tools", "response_format", "stop")


def request_turns(messages: list[Any], role: str) -> tuple[str | None, list[Turn]]:
    """A request's system prompt (None: none given) and its history as turns of ``role``'s model."""
    from kokorozoo.records import Role

    other: Role = "client" if role == "counselor" else "counselor"
    system, turns = None, []
    for message in messages:
        content = message.content if isinstance(message.content, str) else _text(message.content)
        if message.role == "system":
            system = content if system is None else f"{system}\n{content}"
        elif message.role in ("user", "assistant"):
            speaker = role if message.role == "assistant" else other
            turns.append(Turn(speaker, content, 1))
        else:
            raise ValueError(f"messages: a {message.role!r} message cannot be part of a counseling session")
    return system, turns


def _text(content: Any) -> str:
    parts = content or []
    return "".join(
        getattr(part, "text", None) or (part.get("text", "") if isinstance(part, dict) else "") for part in parts
    )


def build_server(model: str | Path, name: str, timeout: float = 600.0):
    """The LitServer serving the model at ``model`` (an export folder or checkpoint) as ``name``;
    the model is checked here, loaded by the server's worker."""
    import litserve as ls

    find_served_model(model)
    return ls.LitServer(
        ServedModel(str(model), spec=ServedSpec(name)),
        accelerator="auto",
        devices=1,
        workers_per_device=1,
        timeout=timeout,
    )


def find_served_model(model: str | Path):
    from kokorozoo.interactive.models import find_model
    from kokorozoo.tasks.response import ResponseTask

    return find_model(model, (ResponseTask,), "the served model")  # a counselor or a client model


try:  # the serving library is imported only by ``kokorozoo serve``'s own process and workers
    import litserve as _ls
    from fastapi import BackgroundTasks, HTTPException
    from fastapi.responses import JSONResponse
    from litserve.specs.openai import ChatCompletionRequest, OpenAISpec
except ImportError:  # pragma: no cover - litserve is a dependency; named when missing
    _ls = None


if _ls is not None:

    class ServedSpec(OpenAISpec):
        """OpenAI's chat completions, ``/v1/models`` and a 404 for another model's name."""

        def __init__(self, name: str):
            super().__init__()
            self.name = name

        def pre_setup(self, lit_api) -> None:
            super().pre_setup(lit_api)
            self.add_endpoint("/v1/models", self.models, ["GET"])

        async def models(self) -> dict[str, Any]:
            return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "kokorozoo"}]}

        async def chat_completion(self, request: ChatCompletionRequest, background_tasks: BackgroundTasks):
            if request.model and request.model != self.name:
                return _error(404, f"the model {request.model!r} does not exist here (this server has {self.name!r})")
            for field in UNSUPPORTED:
                if getattr(request, field, None):
                    return _error(400, f"{field} is not supported by kokorozoo models")
            if (request.n or 1) != 1:
                return _error(400, "n must be 1")
            return await super().chat_completion(request, background_tasks)

    def _error(status: int, message: str) -> JSONResponse:
        """An error as OpenAI's API words it (its clients show ``error.message``)."""
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    class ServedModel(_ls.LitAPI):
        """The model's next turn for each request's history, streamed as it is decoded."""

        def __init__(self, model: str, **kwargs):
            super().__init__(**kwargs)
            self.model = model

        def setup(self, device) -> None:
            from kokorozoo.interactive.models import Speaker

            self.speaker = Speaker.load(find_served_model(self.model))

        def predict(self, request) -> Iterator[dict[str, Any]]:
            try:
                system, turns = request_turns(request.messages, self.speaker.role)
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
            yield from _stream_turn(self.speaker, turns, system, **_decoding(request))


def _decoding(request) -> dict[str, Any]:
    """The request's decoding: greedy and the model's own length unless it sets them."""
    settings: dict[str, Any] = {}
    if "temperature" in request.model_fields_set and request.temperature:
        settings["sampling"] = Sampling(float(request.temperature))
    limit = request.max_completion_tokens or request.max_tokens
    if limit is not None:
        settings["max_new_tokens"] = int(limit)
    return settings


def _stream_turn(
    speaker, turns: list[Turn], system: str | None, sampling: Sampling | None = None, max_new_tokens: int | None = None
) -> Iterator[dict[str, Any]]:
    """The model's next turn as text deltas (the last one with the token counts): generated on a
    thread, so each delta is sent as it is decoded."""
    import copy

    speaker = copy.copy(speaker)  # the request's settings stay with this request
    if system is not None:
        speaker.system_prompt = system
    speaker.decode_with(max_new_tokens, sampling)
    pieces: queue.Queue = queue.Queue()
    done = object()
    result: dict[str, Any] = {}

    def generate() -> None:
        try:
            [text], _ = speaker.next_turns([turns], on_text=lambda _, so_far: pieces.put(so_far))
            result["text"] = text
        except BaseException as e:  # noqa: BLE001 - raised again on the serving side
            result["error"] = e
        finally:
            pieces.put(done)

    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    sent = ""
    while (piece := pieces.get()) is not done:
        shown = piece.strip()  # as the turn is kept: trailing space waits for what follows it
        if len(shown) > len(sent) and shown.startswith(sent):
            yield {"role": "assistant", "content": shown[len(sent) :]}
            sent = shown
    thread.join()
    if "error" in result:
        raise result["error"]
    final = result["text"]
    rest = final[len(sent) :] if final.startswith(sent) else ""
    prompt_tokens = len(speaker.prompt(turns))
    [completion_tokens] = speaker.new_token_counts
    yield {
        "role": "assistant",
        "content": rest,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def vllm_check(folder: str | Path, name: str) -> tuple[list[str], str]:
    """What keeps vLLM's LoRA loader from serving the export at ``folder`` (empty: nothing), and
    the command that serves it there as ``name``: the base model with the adapter, prompted by
    the export's own chat template."""
    import json

    from kokorozoo.tasks.model_files import ADAPTER_CONFIG, read_export

    folder = Path(folder)
    record = read_export(folder)  # every file checked first
    problems = []
    if record.task.head_name is not None:
        problems.append(
            f"its {record.task.head_name} ({record.contents[record.task.head_name]['file']}) are kokorozoo's own"
            " modules: vLLM serves a language model and its adapter only (serve it with kokorozoo serve)"
        )
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        problems.append("it holds no LoRA adapter: serve the base model itself")
        return problems, ""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {config['modules_to_save']}: vLLM accepts adapters without them only")
    if config.get("use_dora"):
        problems.append("use_dora: vLLM does not load DoRA adapters")
    if config.get("bias", "none") != "none":
        problems.append(f"bias {config['bias']!r}: vLLM loads LoRA adapters with bias 'none' only")
    base = config.get("base_model_name_or_path") or record.settings.get("backbone", "")
    command = [
        "vllm serve",
        str(base),
        "--enable-lora",
        f"--lora-modules {name}={folder.resolve()}",
        f"--max-lora-rank {max(16, int(config.get('r', 8)))}",
        f"--chat-template {folder.resolve() / 'chat_template.jinja'}",
        f"--max-model-len {record.prompt.get('max_length', 4096)}",
    ]
    if record.contents.get("quantization_config"):
        command.append("--quantization bitsandbytes")  # the 4-bit base the adapter was trained on
    return problems, " ".join(command)

"""Tests of models behind an OpenAI-compatible endpoint (GPT-4o, a vLLM or ``kokorozoo serve``
server): the paper's API rows of Table 4 (responses) and Table 5 (scores). Each is a local task's
test — the same datamodule, test items, metrics, baselines and files — with the model's answers
asked of the endpoint instead of generated here; no weights are loaded.

- :class:`EndpointResponseTask`: each test turn is sent as the history the local model's prompt
  holds (whole turns), the generating side's turns as ``assistant``, the other's as ``user``.
- :class:`EndpointScoreTask`: each test dialogue is sent as one user message, the whole dialogue
  as a transcript followed by the datamodule's instruction; the answer is read by the local text
  model's parser, its invalid items counted as the local model's are.

A request that fails after its retries counts as an empty answer (the metrics are not flattered:
an empty generation, 20 invalid items) and is counted with the requests and tokens in
``metrics.json``'s ``endpoint`` section, summed over every process's rows.
"""

from __future__ import annotations

from typing import Any

import torch

from kokorozoo.data.score_format import parse_scores
from kokorozoo.endpoints.client import Endpoint, EndpointClient, chat_messages, transcript
from kokorozoo.errors import UsageError
from kokorozoo.tasks.response import ResponseTask
from kokorozoo.tasks.score import ScoreTask

Answer = dict[str, Any] | None


class EndpointModel:
    """What both endpoint tasks share: the endpoint, checked before any test item, nothing to load
    or fit, and the requests' cost in the rows and ``metrics.json``.

    The settings each task takes (documented once here): ``endpoint`` (``MODEL@URL``, e.g.
    ``gpt-4o@https://api.openai.com/v1``), ``system_prompt`` (a system message first; none by
    default), ``api_key_env`` (the environment variable holding the key; a local server needs
    none), ``temperature`` (0: greedy), ``concurrency`` (requests in flight per process),
    ``request_timeout`` (seconds) and ``max_retries`` (of a request answered 408/409/429/5xx or cut
    off); the task's ``max_new_tokens`` caps each answer."""

    remote = True

    def connect_endpoint(self) -> None:
        """The endpoint the task's settings name (saved in ``hparams`` by the task's ``__init__``)."""
        hp = self.hparams
        if not Endpoint.names_one(hp.endpoint):
            raise UsageError(
                f"model.init_args.endpoint: expected MODEL@URL (gpt-4o@https://api.openai.com/v1), got {hp.endpoint!r}"
            )
        self.endpoint = Endpoint.parse(
            hp.endpoint,
            api_key_env=hp.api_key_env,
            temperature=hp.temperature,
            max_tokens=hp.max_new_tokens,
            concurrency=hp.concurrency,
            timeout=hp.request_timeout,
            max_retries=hp.max_retries,
        )
        self._client: EndpointClient | None = None

    @property
    def client(self) -> EndpointClient:
        if self._client is None:
            self._client = EndpointClient(self.endpoint)
        return self._client

    def configure_model(self) -> None:
        """Nothing to load: the model is behind the endpoint (the tokenizer loads when asked for)."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            raise UsageError(f"{self.endpoint.name} is a model behind an endpoint: kokorozoo can test it, not fit it")
        self.client.check()  # a wrong URL, key or model name before any test item

    def cost_fields(self, rows: list[dict], answers: list[Answer]) -> None:
        for row, answer in zip(rows, answers):
            row["request_failed"] = answer is None
            row["prompt_tokens"] = (answer or {}).get("prompt_tokens") or 0
            row["completion_tokens"] = (answer or {}).get("completion_tokens") or 0

    def cost_section(self, rows: list[dict]) -> dict[str, Any]:
        return {
            "endpoint": {
                "model": self.endpoint.model,
                "base_url": self.endpoint.base_url,
                "requests": len(rows),
                "failed": sum(bool(r["request_failed"]) for r in rows),
                "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
                "completion_tokens": sum(r["completion_tokens"] for r in rows),
            }
        }

    def on_test_end(self) -> None:
        if self.trainer.is_global_zero:
            print(f"kokorozoo: {self.client.usage.line(self.endpoint.name)}")


class EndpointResponseTask(EndpointModel, ResponseTask):
    """Response generation by ``endpoint`` (``MODEL@URL``); test and predict only. Settings: see
    :class:`EndpointModel`; ``backbone`` names the tokenizer that decides which history turns fit
    in ``max_length``; the rest are :class:`~kokorozoo.tasks.response.ResponseTask`'s."""

    reading_settings = (*ResponseTask.reading_settings, "endpoint", "system_prompt")

    def __init__(
        self,
        endpoint: str = "",
        system_prompt: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        concurrency: int = 4,
        request_timeout: float = 120.0,
        max_retries: int = 5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.connect_endpoint()

    def infer(self, batch: dict) -> list[Answer]:
        """The endpoint's answer to each request (None: it failed after its retries)."""
        role = self.prompt_settings.get("role", "counselor")  # the datamodule's: whose turns are generated
        conversations = [chat_messages(r.history, role, self.hparams.system_prompt) for r in batch["requests"]]
        return self.client.complete(conversations, desc="Test turns")

    def prediction_rows(self, batch: dict, outputs: list[Answer]) -> list[dict]:
        rows = ResponseTask.prediction_rows(self, batch, _texts(outputs))
        self.cost_fields(rows, outputs)
        return rows

    def update_test_metrics(self, batch: dict, outputs: list[Answer]) -> None:
        ResponseTask.update_test_metrics(self, batch, _texts(outputs))

    def test_figures(self, rows: list[dict]) -> dict:
        return {**ResponseTask.test_figures(self, rows), "extra": self.cost_section(rows)}


class EndpointScoreTask(EndpointModel, ScoreTask):
    """Score prediction by ``endpoint`` answering in text (the paper's zero-shot GPT-4o row of
    Table 5); test only. Settings: see :class:`EndpointModel`; ``max_new_tokens`` caps the answer
    (the full answer is about 120 tokens of Swallow's tokenizer); the answer is always read by
    the parser (``scoring: greedy``)."""

    reading_settings = (*ScoreTask.reading_settings, "endpoint", "system_prompt")

    def __init__(
        self,
        endpoint: str = "",
        system_prompt: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        concurrency: int = 4,
        request_timeout: float = 120.0,
        max_retries: int = 5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.scoring != "greedy":
            raise UsageError("model.init_args.scoring: a model behind an endpoint is read from its text (greedy)")
        self.connect_endpoint()

    def infer(self, batch: dict) -> tuple[torch.Tensor, list[dict]]:
        """The parsed scores [B, 20] (NaN = invalid) and each answer's text and cost."""
        instruction = self.prompt_settings.get("instruction", "")
        conversations = [
            [
                *([{"role": "system", "content": self.hparams.system_prompt}] if self.hparams.system_prompt else []),
                {"role": "user", "content": f"{transcript(turns)}\n\n{instruction}"},
            ]
            for turns in batch["turns"]
        ]
        answers = self.client.complete(conversations, desc="Test dialogues")
        texts = _texts(answers)
        preds = torch.stack([parse_scores(text) for text in texts]).to(batch["scores"].device)
        extras = [{"generation": text} for text in texts]
        self.cost_fields(extras, answers)
        return preds, extras

    def test_figures(self, rows: list[dict]) -> dict:
        figures = ScoreTask.test_figures(self, rows)
        return {**figures, "extra": self.cost_section(rows)}


def _texts(outputs: list[Answer]) -> list[str]:
    return [(answer or {}).get("text", "").strip() for answer in outputs]

"""Response generation by a model behind an OpenAI-compatible endpoint (GPT-4o, a vLLM or
``kokorozoo serve`` server): the test of :class:`~kokorozoo.tasks.response.ResponseTask` — the same
datamodule, test turns, metrics, baselines and ``metrics.json`` — with each turn asked of the
endpoint instead of generated here (the paper's Table 4 rows for API models).

Each test turn is sent as the history the local model's prompt holds (whole turns), the
counselor's turns as ``assistant``, the client's as ``user``, after ``system_prompt``. A request
that fails after its retries counts as an empty generation (the metrics are not flattered) and is
counted in ``metrics.json``'s ``endpoint`` section with the requests and tokens, summed over every
process's rows.
"""

from __future__ import annotations

from typing import Any

from kokorozoo.endpoints.client import Endpoint, EndpointClient, chat_messages
from kokorozoo.errors import UsageError
from kokorozoo.tasks.response import ResponseTask


class EndpointResponseTask(ResponseTask):
    """Response generation by ``endpoint`` (``MODEL@URL``); test and predict only.

    Args:
        endpoint: the model's name on the server and the API's root, ``gpt-4o@https://api.openai.com/v1``.
        system_prompt: the system message before each history (none by default).
        api_key_env: the environment variable holding the key (a local server needs none).
        temperature: 0 (greedy, as kokorozoo's own models are tested) or more.
        concurrency: requests in flight at once, per process.
        request_timeout: seconds one request may take.
        max_retries: retries of a request answered 408/409/429/5xx or cut off.
        **kwargs: :class:`ResponseTask`'s; ``max_new_tokens`` caps each answer, ``backbone`` names
            the tokenizer that decides which history turns fit in ``max_length``.
    """

    remote = True
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
        if not Endpoint.names_one(endpoint):
            raise UsageError(
                f"model.init_args.endpoint: expected MODEL@URL (gpt-4o@https://api.openai.com/v1), got {endpoint!r}"
            )
        self.endpoint = Endpoint.parse(
            endpoint,
            api_key_env=api_key_env,
            temperature=temperature,
            max_tokens=self.hparams.max_new_tokens,
            concurrency=concurrency,
            timeout=request_timeout,
            max_retries=max_retries,
        )
        self._client: EndpointClient | None = None

    def configure_model(self) -> None:
        """Nothing to load: the model is behind the endpoint (the tokenizer loads when asked for)."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            raise UsageError(f"{self.endpoint.name} is a model behind an endpoint: kokorozoo can test it, not fit it")
        self.client.check()  # a wrong URL, key or model name before any test turn

    @property
    def client(self) -> EndpointClient:
        if self._client is None:
            self._client = EndpointClient(self.endpoint)
        return self._client

    def infer(self, batch: dict) -> list[dict[str, Any] | None]:
        """The endpoint's answer to each request (None: it failed after its retries)."""
        role = self.prompt_settings.get("role", "counselor")  # the datamodule's: whose turns are generated
        system = self.hparams.system_prompt
        conversations = [chat_messages(r.history, role, system) for r in batch["requests"]]
        return self.client.complete(conversations, desc="Test turns")

    def prediction_rows(self, batch: dict, outputs: list[dict[str, Any] | None]) -> list[dict]:
        rows = super().prediction_rows(batch, _texts(outputs))
        for row, answer in zip(rows, outputs):
            row["request_failed"] = answer is None
            row["prompt_tokens"] = (answer or {}).get("prompt_tokens") or 0
            row["completion_tokens"] = (answer or {}).get("completion_tokens") or 0
        return rows

    def update_test_metrics(self, batch: dict, outputs: list[dict[str, Any] | None]) -> None:
        super().update_test_metrics(batch, _texts(outputs))

    def test_figures(self, rows: list[dict]) -> dict:
        figures = super().test_figures(rows)
        figures["extra"] = {
            "endpoint": {
                "model": self.endpoint.model,
                "base_url": self.endpoint.base_url,
                "requests": len(rows),
                "failed": sum(bool(r["request_failed"]) for r in rows),
                "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
                "completion_tokens": sum(r["completion_tokens"] for r in rows),
            }
        }
        return figures

    def on_test_end(self) -> None:
        if self.trainer.is_global_zero:
            print(f"kokorozoo: {self.client.usage.line(self.endpoint.name)}")


def _texts(outputs: list[dict[str, Any] | None]) -> list[str]:
    return [(answer or {}).get("text", "").strip() for answer in outputs]

"""An OpenAI-compatible chat-completions endpoint as a model: a paid API (GPT-4o), or a server a
lab runs (``kokorozoo serve``, vLLM, SGLang).

Practical for a paid API and a shared server:

- the key only from an environment variable (``api_key_env``, default ``OPENAI_API_KEY``; a
  server on this machine needs none), never written to a file or a log;
- one check at start-up (``/v1/models``): a wrong URL, a refused key or a model the server does
  not have is one line, before any work;
- at most ``concurrency`` requests at once, each with a ``timeout``; the ``openai`` client
  retries 408/409/429/5xx and lost connections ``max_retries`` times with exponential backoff,
  waiting what a ``Retry-After`` header asks (up to a minute);
- every complete answer kept in an on-disk cache (:mod:`kokorozoo.endpoints.cache`) keyed by the
  URL, the model, the messages and every decoding setting: a rerun, or a run resumed after
  Ctrl-C, sends only what was not answered before;
- a request that still fails is ``None`` in the answers, counted and reported, never dropped;
- what was spent is counted (:class:`Usage`: requests sent, answered from the cache, failed,
  prompt and completion tokens) and printed at the end.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kokorozoo.endpoints.cache import AnswerCache, request_key
from kokorozoo.errors import UsageError
from kokorozoo.progress import progress

#: Where the answers are kept unless KOKOROZOO_ENDPOINT_CACHE names another file.
CACHE_FILE = "endpoints.sqlite"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")

Message = dict[str, str]


def chat_messages(turns: Sequence[tuple[str, str]], role: str, system_prompt: str | None = None) -> list[Message]:
    """``(role, text)`` turns as chat messages for ``role``'s next turn: its own turns are the
    ``assistant``'s, the other side's the ``user``'s, after the system prompt when there is one."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [{"role": "assistant" if speaker == role else "user", "content": text} for speaker, text in turns]
    return messages


#: How a transcript names the two sides.
SPEAKER_NAMES = {"counselor": "カウンセラー", "client": "クライアント"}


def transcript(turns: Sequence[tuple[str, str]]) -> str:
    """``(role, text)`` turns as one text to be read (by a judge, or a model asked to rate them)."""
    return "\n".join(f"{SPEAKER_NAMES.get(role, role)}: {text}" for role, text in turns)


@dataclass(frozen=True)
class Endpoint:
    """Where a model is served and how it is asked.

    Args:
        model: the model's name on the server (``gpt-4o``, ``Llama-3.1-KokoroChat-High``).
        base_url: the API's root, up to ``/v1`` (``https://api.openai.com/v1``).
        api_key_env: the environment variable holding the key (never the key itself).
        temperature: 0 decodes greedily (as kokorozoo evaluates its own models).
        max_tokens: the longest answer; None: the server's default.
        seed: sent to servers that honour it, for repeatable sampling.
        concurrency: requests in flight at once.
        timeout: seconds one request may take.
        max_retries: retries of a request that failed for a reason worth retrying.
    """

    model: str
    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int | None = None
    seed: int | None = None
    concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 5

    @classmethod
    def parse(cls, spec: str, **settings: Any) -> Endpoint:
        """``MODEL@URL`` (``gpt-4o@https://api.openai.com/v1``) with the other settings."""
        model, at, url = spec.partition("@")
        if not at or not model or urlparse(url).scheme not in ("http", "https"):
            raise UsageError(f"{spec!r}: an endpoint is MODEL@URL, e.g. gpt-4o@https://api.openai.com/v1")
        return cls(model, url.rstrip("/"), **settings)

    @staticmethod
    def names_one(spec: str) -> bool:
        """Whether a command-line model argument names an endpoint rather than a folder or file."""
        _, at, url = spec.partition("@")
        return bool(at) and urlparse(url).scheme in ("http", "https")

    @property
    def name(self) -> str:
        return f"{self.model}@{self.base_url}"

    @property
    def is_local(self) -> bool:
        return urlparse(self.base_url).hostname in LOCAL_HOSTS

    def api_key(self) -> str:
        """The key from ``api_key_env``; a local server needs none."""
        key = os.environ.get(self.api_key_env, "")
        if key:
            return key
        if self.is_local:
            return "none"
        raise UsageError(
            f"{self.name}: no API key: set {self.api_key_env} in the environment (kokorozoo reads the key only from"
            " there, never from a file or the command line)"
        )

    def request(self, messages: Sequence[Message]) -> dict[str, Any]:
        """Everything that decides the answer: the cache's key (the key itself is not part of it)."""
        request: dict[str, Any] = {
            "base_url": self.base_url,
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "temperature": self.temperature,
        }
        if self.max_tokens is not None:
            request["max_tokens"] = self.max_tokens
        if self.seed is not None:
            request["seed"] = self.seed
        return request

    def with_settings(self, **settings: Any) -> Endpoint:
        return replace(self, **{k: v for k, v in settings.items() if v is not None})


@dataclass
class Usage:
    """What the requests cost: counted as they are answered, printed at the end."""

    sent: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, answer: dict[str, Any] | None, cached: bool, error: str | None = None) -> None:
        with self._lock:
            if cached:
                self.cached += 1
                return
            self.sent += 1
            if answer is None:
                self.failed += 1
                self.errors[error or "error"] = self.errors.get(error or "error", 0) + 1
                return
            self.prompt_tokens += answer.get("prompt_tokens") or 0
            self.completion_tokens += answer.get("completion_tokens") or 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_sent": self.sent,
            "answered_from_cache": self.cached,
            "failed": self.failed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            **({"errors": dict(self.errors)} if self.errors else {}),
        }

    def line(self, name: str) -> str:
        failed = f", {self.failed} failed ({_counts(self.errors)})" if self.failed else ""
        return (
            f"{name}: {_count(self.sent, 'request')} sent, {self.cached} answered from the cache{failed};"
            f" {self.prompt_tokens} prompt and {self.completion_tokens} completion tokens"
        )


def default_cache() -> AnswerCache:
    from kokorozoo.backbone import default_cache_dir

    path = os.environ.get("KOKOROZOO_ENDPOINT_CACHE") or Path(default_cache_dir()) / CACHE_FILE
    return AnswerCache(path)


class EndpointClient:
    """Chat completions from one :class:`Endpoint`, cached, bounded, retried and counted."""

    def __init__(self, endpoint: Endpoint, cache: AnswerCache | None = None):
        from openai import OpenAI

        self.endpoint = endpoint
        self.cache = cache if cache is not None else default_cache()
        self.usage = Usage()
        self._client = OpenAI(
            api_key=endpoint.api_key(),
            base_url=endpoint.base_url,
            timeout=endpoint.timeout,
            max_retries=endpoint.max_retries,
        )

    def check(self) -> None:
        """The server answers, takes the key and has the model; else one line."""
        import openai

        name = self.endpoint.name
        try:
            served = [m.id for m in self._client.with_options(max_retries=1).models.list()]
        except openai.AuthenticationError:
            raise UsageError(f"{name}: the server refused the key in {self.endpoint.api_key_env} (401)") from None
        except openai.NotFoundError:
            return  # a server without /v1/models: the first request says the rest
        except openai.APIConnectionError as e:
            raise UsageError(f"{name}: cannot be reached ({_reason(e)})") from None
        except openai.APIStatusError as e:
            raise UsageError(f"{name}: /models answered {e.status_code} ({_reason(e)})") from None
        if self.endpoint.model not in served:
            listed = ", ".join(served[:10]) + (" ..." if len(served) > 10 else "")
            raise UsageError(f"{name}: the server has no model {self.endpoint.model!r} (it serves: {listed or 'none'})")

    def complete(
        self, conversations: Sequence[Sequence[Message]], desc: str | None = None
    ) -> list[dict[str, Any] | None]:
        """The answer to each conversation (``{"text", "finish_reason", "prompt_tokens",
        "completion_tokens"}``), None where the request failed after its retries."""
        answers: list[dict[str, Any] | None] = [None] * len(conversations)
        todo = []
        for i, messages in enumerate(conversations):
            request = self.endpoint.request(messages)
            key = request_key(request)
            if (hit := self.cache.get(key)) is not None:
                answers[i] = hit
                self.usage.add(hit, cached=True)
            else:
                todo.append((i, request, key))
        if not todo:
            return answers
        with ThreadPoolExecutor(max_workers=max(1, self.endpoint.concurrency)) as pool:
            futures = {pool.submit(self._send, request, key): i for i, request, key in todo}
            done = as_completed(futures)
            for future in progress(done, desc or self.endpoint.model, unit="request", total=len(futures)):
                answers[futures[future]] = future.result()
        return answers

    def stream(self, messages: Sequence[Message], on_text: Callable[[str], None]) -> dict[str, Any] | None:
        """The answer to one conversation, ``on_text`` called with the text so far as it comes
        (once, whole, when the cache has it)."""
        request = self.endpoint.request(messages)
        key = request_key(request)
        if (hit := self.cache.get(key)) is not None:
            self.usage.add(hit, cached=True)
            on_text(hit["text"])
            return hit
        return self._send(request, key, on_text)

    def _send(
        self, request: dict[str, Any], key: str, on_text: Callable[[str], None] | None = None
    ) -> dict[str, Any] | None:
        import openai

        body = {k: v for k, v in request.items() if k != "base_url"}
        try:
            if on_text is None:
                response = self._client.chat.completions.create(**body)
                choice = response.choices[0]
                usage = response.usage
                answer = {
                    "text": choice.message.content or "",
                    "finish_reason": choice.finish_reason,
                    "prompt_tokens": usage.prompt_tokens if usage else None,
                    "completion_tokens": usage.completion_tokens if usage else None,
                }
            else:
                answer = self._streamed(body, on_text)
        except openai.APIError as e:
            self.usage.add(None, cached=False, error=_error_kind(e))
            return None
        self.cache.put(key, answer)
        self.usage.add(answer, cached=False)
        return answer

    def _streamed(self, body: dict[str, Any], on_text: Callable[[str], None]) -> dict[str, Any]:
        text, finish, usage = "", None, None
        stream = self._client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    text += choice.delta.content
                    on_text(text)
                finish = choice.finish_reason or finish
        return {
            "text": text,
            "finish_reason": finish,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
        }


def _error_kind(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    return f"HTTP {status}" if status else type(error).__name__


def _reason(error: BaseException) -> str:
    cause = error.__cause__ or error
    text = str(cause).strip() or type(cause).__name__
    return text.splitlines()[0]


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _counts(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(errors.items()))

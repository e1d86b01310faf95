"""A model behind an OpenAI-compatible endpoint as one side of conversations (``kokorozoo chat``
and both sides of ``simulate``): the same calls as a local :class:`~kokorozoo.interactive.models.Speaker`.

The history goes as chat messages: this speaker's turns as ``assistant``, the other side's as
``user``, after the system prompt. A request that failed after its retries gives ``None`` for
that conversation: the caller ends or reports it, nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kokorozoo.endpoints.client import Endpoint, EndpointClient, Message, chat_messages
from kokorozoo.generation import Sampling
from kokorozoo.records import Role, Turn


class EndpointSpeaker:
    """The next turn of many conversations from an endpoint (``concurrency`` requests at once)."""

    cached = False  # no key/value cache to carry between turns

    def __init__(self, client: EndpointClient, role: Role, system_prompt: str | None = None):
        self.client, self.role, self.system_prompt = client, role, system_prompt
        endpoint = client.endpoint
        self.sampling = Sampling(endpoint.temperature, endpoint.seed or 0)
        self._calls = 0  # sampling: each call asks with the next seed, so /retry gets another reply

    @classmethod
    def connect(cls, endpoint: Endpoint, role: Role, system_prompt: str | None = None) -> EndpointSpeaker:
        """A speaker on ``endpoint``, its server checked (one line if it cannot be used)."""
        return cls(connect(endpoint), role, system_prompt)

    @property
    def source(self) -> str:
        return self.client.endpoint.name

    def decode_with(self, max_new_tokens: int | None = None, sampling: Sampling | None = None) -> None:
        """Ask otherwise than greedily or for shorter answers (``kokorozoo chat --temperature``)."""
        self.client.endpoint = self.client.endpoint.with_settings(max_tokens=max_new_tokens)
        if sampling is not None:
            self.sampling = sampling
            self.client.endpoint = self.client.endpoint.with_settings(temperature=sampling.temperature)

    def messages(self, turns: Sequence[Turn]) -> list[Message]:
        """``turns`` as chat messages for this speaker's next turn."""
        return chat_messages([(turn.role, turn.text) for turn in turns], self.role, self.system_prompt)

    def next_turns(
        self,
        histories: Sequence[Sequence[Turn]],
        caches: Sequence[None] | None = None,
        on_text: Callable[[int, str], None] | None = None,
    ) -> tuple[list[str | None], list[None]]:
        """This speaker's next turn after each history (None: the request failed); streamed
        through ``on_text(i, text_so_far)`` when given."""
        conversations = [self.messages(turns) for turns in histories]
        if not self.sampling.greedy:
            self.client.endpoint = self.client.endpoint.with_settings(seed=self.sampling.seed + self._calls)
            self._calls += 1
        if on_text is not None:
            answers = [
                self.client.stream(messages, lambda text, i=i: on_text(i, text))
                for i, messages in enumerate(conversations)
            ]
        else:
            answers = self.client.complete(conversations, desc=f"{self.role} turns")
        texts = [None if answer is None else answer["text"].strip() for answer in answers]
        return texts, [None] * len(texts)


def connect(endpoint: Endpoint) -> EndpointClient:
    """A client of ``endpoint``, its server checked (one line if it cannot be used)."""
    client = EndpointClient(endpoint)
    client.check()
    return client


def find_speaker(spec: str, role: Role, what: str, settings: dict, system_prompt: str | None = None):
    """The speaker ``spec`` names, checked and not yet loaded: ``MODEL@URL`` connects to an endpoint
    (its server checked), anything else is an export folder or checkpoint."""
    from kokorozoo.interactive.models import Speaker

    if Endpoint.names_one(spec):
        return EndpointSpeaker.connect(Endpoint.parse(spec, **settings), role, system_prompt)
    return Speaker.find(spec, role, what)


def load_speaker(found):
    """What :func:`find_speaker` found, ready to speak."""
    from kokorozoo.interactive.models import Speaker

    return found if isinstance(found, EndpointSpeaker) else Speaker.load(found)


def report_usage(*speakers) -> None:
    """What the endpoint speakers (or endpoint clients) among ``speakers`` cost, one line each on stderr."""
    import sys

    for speaker in speakers:
        client = speaker.client if isinstance(speaker, EndpointSpeaker) else speaker
        if isinstance(client, EndpointClient):
            print(f"kokorozoo: {client.usage.line(client.endpoint.name)}", file=sys.stderr)

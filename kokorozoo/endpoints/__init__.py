"""Models behind an OpenAI-compatible endpoint (a paid API, ``kokorozoo serve``, vLLM, SGLang):
:class:`~kokorozoo.endpoints.client.Endpoint` says where and how, the client asks (bounded,
retried, cached and counted)."""

from kokorozoo.endpoints.client import Endpoint, EndpointClient, Usage

__all__ = ["Endpoint", "EndpointClient", "Usage"]

"""Providers: one module per upstream kind (request building, and which translator reads the answer).

A provider's `open` does everything that can fail before the first byte goes to the client (build
the upstream request, connect, check the status) and raises `RouterError` for it; what it returns is
the upstream's byte stream, which the app feeds to the translator one read at a time.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

import httpx

from ferroute import _core
from ferroute.config import ProviderConfig, Settings, TimeoutsConfig
from ferroute.errors import RouterError
from ferroute.models import ResponsesRequest

# The Rust translators share one API (`_core.pyi`); a provider names the one that reads its answers.
Translator = _core.ChatCompletionsTranslator | _core.AnthropicTranslator | _core.ResponsesTranslator


@dataclass
class Upstream:
    """An opened upstream answer: the dialect's SSE bytes in `chunks`, or a whole JSON `body`."""

    chunks: AsyncIterator[bytes] | None = None
    body: bytes | None = None
    response: httpx.AsyncByteStream | None = field(default=None, repr=False)  # what closes the body early

    async def aclose(self) -> None:
        if self.response is not None:
            await self.response.aclose()


class Provider(ABC):
    # What reads this provider's answers (streamed, or `convert` for a whole body).
    translator: ClassVar[type[Translator]] = _core.ChatCompletionsTranslator
    # Whether its reasoning items carry the upstream's own `encrypted_content` (Anthropic's signatures, OpenAI's
    # blobs), which later turns send back: kept in the store, shown to a client only sealed (`include`).
    keeps_encrypted_reasoning: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig, settings: Settings) -> None:
        self.config = config
        self.name = config.name
        self.timeouts: TimeoutsConfig = config.timeouts or settings.timeouts

    def models(self) -> list[str]:
        return list(self.config.models)

    def whole_as_stream(self, body: bytes) -> bytes:
        """A whole JSON answer to a streaming request (some servers ignore `stream`) as the stream of this
        provider's dialect that says the same, for a client that asked for a stream. Chat Completions: the
        `chat.completion` as one chunk (`message` read as `delta`); anything else gives a stream the translator
        fails as malformed."""
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return b"data: {malformed upstream body}\n\n"
        for choice in data.get("choices") or []:
            if isinstance(choice, dict) and "message" in choice:
                choice["delta"] = choice.pop("message")
        return b"data: " + json.dumps(data).encode() + b"\n\ndata: [DONE]\n\n"

    @abstractmethod
    async def open(
        self, request: ResponsesRequest, upstream_model: str, transport: httpx.AsyncBaseTransport
    ) -> Upstream:
        """Start the upstream request; raises `RouterError` for anything that fails before it streams."""


def build_providers(settings: Settings) -> dict[str, Provider]:
    from ferroute.providers.anthropic import AnthropicProvider
    from ferroute.providers.chat_completions import ChatCompletionsProvider
    from ferroute.providers.mock import MockProvider
    from ferroute.providers.responses import ResponsesProvider

    providers: dict[str, Provider] = {}
    for config in settings.providers:
        if config.kind == "chat_completions":
            providers[config.name] = ChatCompletionsProvider(config, settings)
        elif config.kind == "anthropic":
            providers[config.name] = AnthropicProvider(config, settings)
        elif config.kind == "responses":
            providers[config.name] = ResponsesProvider(config, settings)
        elif config.kind == "mock":
            providers[config.name] = MockProvider(config, settings)
        else:  # config.py rejects the kinds without an implementation; this guards a new kind
            raise ValueError(f"provider kind {config.kind!r} is not implemented")
    return providers


class Router:
    """`"<upstream model>:<provider>"` → (provider, upstream model)."""

    def __init__(self, providers: dict[str, Provider], default_provider: str | None) -> None:
        self.providers = providers
        if default_provider is None and len(providers) == 1:
            default_provider = next(iter(providers))
        self.default = default_provider

    def resolve(self, model: str) -> tuple[Provider, str]:
        upstream_model, sep, name = model.rpartition(":")
        if sep and upstream_model and name in self.providers:
            return self.providers[name], upstream_model
        if self.default is not None:
            return self.providers[self.default], model
        raise RouterError(
            404,
            f"the model {model!r} does not name a provider this router knows; use '<model>:<provider>' with one of "
            f"{sorted(self.providers)}",
            type="not_found",
            code="model_not_found",
            param="model",
        )

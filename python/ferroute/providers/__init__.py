"""Providers, each made of two parts: a dialect and a source.

A dialect (`chat_completions`, `anthropic`, `responses`) is what an upstream kind speaks: the path and
headers of its endpoint, how its key is sent, the body an Open Responses request becomes, and which Rust
translator reads the answer. A source is where the answer comes from: an HTTP upstream (`http.HttpUpstream`:
transport, key, timeouts, HTTP errors) or the built-in mock (`mock.MockSource`, no network). A `Provider`
names one of each.

A source's `open` does everything that can fail before the first byte goes to the client (build the upstream
request, connect, check the status) and raises `RouterError` for it; what it returns is the upstream's byte
stream, which the app feeds to the translator one read at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx

from ferroute import _core
from ferroute.config import ProviderConfig, Settings, TimeoutsConfig
from ferroute.models import ResponsesRequest

if TYPE_CHECKING:
    from ferroute._core import Translator
else:  # (the stub's `Translator` is a typing-only protocol; at runtime, the classes that implement it)
    Translator = _core.ChatCompletionsTranslator | _core.AnthropicTranslator | _core.ResponsesTranslator

__all__ = ["Dialect", "Provider", "Source", "Translator", "TranslatorClass", "Upstream", "build_providers"]


class TranslatorClass(Protocol):
    """A translator class, as the app makes one per response (`_core.Translator` has the rest of its API)."""

    def __call__(
        self,
        request: bytes | str | Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        store: bool | None = None,
        reasoning: Literal["keep", "strip", "seal"] = "keep",
        seal: Callable[[bytes], str] | None = None,
        secrets: _core.Secrets | None = None,
        framing: Literal["sse", "json"] = "sse",
        response_id: str | None = None,
        created_at: int | None = None,
        started: bool = False,
    ) -> Translator: ...


@dataclass
class Upstream:
    """An opened upstream answer: the dialect's SSE bytes in `chunks`, or a whole JSON `body`."""

    chunks: AsyncIterator[bytes] | None = None
    body: bytes | None = None
    response: httpx.AsyncByteStream | None = field(default=None, repr=False)  # what closes the body early

    async def aclose(self) -> None:
        if self.response is not None:
            await self.response.aclose()


class Dialect(Protocol):
    """What one upstream kind speaks (one class per kind, in the module named for it)."""

    @property
    def path(self) -> str:
        """The endpoint under the provider's `base_url` (`/chat/completions`)."""

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Headers of the dialect that every request carries (besides content type, accept, user agent)."""

    @property
    def translator(self) -> TranslatorClass:
        """What reads this dialect's answers (streamed, or `convert` for a whole body)."""

    @property
    def keeps_encrypted_reasoning(self) -> bool:
        """Whether its reasoning items carry the upstream's own `encrypted_content` (Anthropic's signatures,
        OpenAI's blobs), which later turns send back: kept in the store, shown to a client only sealed
        (`include`)."""

    def auth_header(self, key: str) -> tuple[bytes, bytes]:
        """The header that carries the upstream key."""

    def request_body(self, request: ResponsesRequest, upstream_model: str) -> dict[str, Any]:
        """The upstream body for an Open Responses request (always asking for a stream); raises `RouterError`
        (400) for what the dialect cannot say."""


class Source(Protocol):
    """Where a provider's answers come from."""

    def open(
        self,
        request: ResponsesRequest,
        upstream_model: str,
        transport: httpx.AsyncBaseTransport,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Awaitable[Upstream]:
        """Start the upstream request; raises `RouterError` for anything that fails before it streams. `headers`:
        more to send (a trace's `traceparent`; None when tracing is off)."""


class OpenUpstream(Protocol):
    """`Source.open`'s signature."""

    def __call__(
        self,
        request: ResponsesRequest,
        upstream_model: str,
        transport: httpx.AsyncBaseTransport,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Awaitable[Upstream]: ...


class Provider:
    """A configured provider: a dialect spoken to a source, under the config's name and timeouts."""

    open: OpenUpstream
    """`Source.open` of this provider's source. (The source's own method, not a wrapper: a request costs the
    same frames and awaits as when each kind was a class with its own `open`.)"""

    def __init__(self, config: ProviderConfig, dialect: Dialect, source: Source, timeouts: TimeoutsConfig) -> None:
        self.config = config
        self.name = config.name
        self.timeouts = timeouts
        self.dialect = dialect
        self.source = source
        self.translator = dialect.translator
        self.keeps_encrypted_reasoning = dialect.keeps_encrypted_reasoning
        self.open = source.open

    def models(self) -> list[str]:
        return list(self.config.models)


def build_providers(settings: Settings) -> dict[str, Provider]:
    from ferroute.providers.anthropic import AnthropicDialect
    from ferroute.providers.chat_completions import ChatCompletionsDialect
    from ferroute.providers.http import HttpUpstream
    from ferroute.providers.mock import MockSource
    from ferroute.providers.responses import ResponsesDialect

    dialects: dict[str, Callable[[ProviderConfig], Dialect]] = {
        "chat_completions": ChatCompletionsDialect,
        "anthropic": AnthropicDialect,
        "responses": ResponsesDialect,
    }
    providers: dict[str, Provider] = {}
    for config in settings.providers:
        timeouts = config.timeouts or settings.timeouts
        source: Source
        if config.kind == "mock":  # the Chat Completions stream an upstream would send, written in-process
            dialect: Dialect = ChatCompletionsDialect(config)
            source = MockSource(dialect)
        elif config.kind in dialects:
            dialect = dialects[config.kind](config)
            source = HttpUpstream(config, dialect, timeouts)
        else:  # config.py rejects the kinds without an implementation; this guards a new kind
            raise ValueError(f"provider kind {config.kind!r} is not implemented")
        providers[config.name] = Provider(config, dialect, source, timeouts)
    return providers

"""The app called in-process (no server, no sockets): a scripted upstream answer and an ASGI `POST /v1/responses`,
for what a real upstream cannot be made to do (raise mid-stream, hang, answer in chosen pieces)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from ferroute.app import App, build_app
from ferroute.config import ProviderConfig, parse_settings
from ferroute.models import ResponsesRequest
from ferroute.providers import Dialect, Provider, Upstream
from ferroute.providers.chat_completions import ChatCompletionsDialect
from ferroute.store.crypto import ReasoningCipher
from ferroute.store.memory import MemoryStore
from tests.support.fixtures import FIXTURES

# A recorded Chat Completions answer ("The capital of the UK is London.").
TEXT = (FIXTURES / "chat_completions" / "openai-gpt-4o-mini-text-usage.sse").read_bytes()

SETTINGS = '[store]\nbackend = "memory"\n[[providers]]\nname = "p"\nkind = "mock"\n'
Open = Callable[[ResponsesRequest, str, httpx.AsyncBaseTransport], Awaitable[Upstream]]


def mock_app() -> App:
    """The app with the built-in mock as provider `p`, and the memory store: these in-process tests write no file
    into the working directory."""
    return build_app(parse_settings(SETTINGS))


class Scripted:
    """A provider's source (`ferroute.providers.Source`) whose upstream answer is the test's `open`."""

    def __init__(self, open_: Open) -> None:
        self._open = open_

    def open(
        self,
        request: ResponsesRequest,
        upstream_model: str,
        transport: httpx.AsyncBaseTransport,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Awaitable[Upstream]:
        return self._open(request, upstream_model, transport)


def app_with(open_: Open, dialect: Callable[[ProviderConfig], Dialect] = ChatCompletionsDialect) -> App:
    """The app with provider `p` built from `dialect` (Chat Completions by default) and a scripted source, passed in
    as its parts (the memory store, a cipher of its own)."""
    settings = parse_settings(SETTINGS)
    config = settings.providers[0]
    provider = Provider(config, dialect(config), Scripted(open_), settings.timeouts)
    return App(settings, providers={"p": provider}, store=MemoryStore(), cipher=ReasoningCipher("test"))


def app_streaming(
    chunks: list[bytes | Exception], dialect: Callable[[ProviderConfig], Dialect] = ChatCompletionsDialect
) -> App:
    """The app with an upstream that answers `chunks`, one read each (an exception in the list is raised there)."""

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    async def open_(request: ResponsesRequest, upstream_model: str, transport: httpx.AsyncBaseTransport) -> Upstream:
        return Upstream(chunks=stream())

    return app_with(open_, dialect)


async def call(app: App, body: dict[str, Any]) -> tuple[int, bytes]:
    return await call_with(app, [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}], [])


async def call_with(app: App, messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """`POST /v1/responses` in-process: `receive` gives `messages` in order, then waits for a disconnect that never
    comes; returns the status and the body sent."""
    never = asyncio.Event()
    status = 0
    out = bytearray()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            out.extend(message.get("body", b""))

    scope = {"type": "http", "method": "POST", "path": "/v1/responses", "headers": headers}
    await app(scope, receive, send)
    return status, bytes(out)

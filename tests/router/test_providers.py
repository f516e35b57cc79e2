"""Providers from parts: one HTTP upstream for every kind, a dialect per kind, against a real local server.

Each test builds providers in-process (no router) and opens them against the mock upstream process
(`tests/support/mock_upstream.py`), over the router's own transport and over httpx's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ferroute import _core
from ferroute._transport import StreamTransport
from ferroute.config import ProviderConfig, Settings, TimeoutsConfig, parse_settings
from ferroute.errors import RouterError
from ferroute.models import ResponsesRequest, parse_request
from ferroute.providers import Dialect, Provider, Upstream, build_providers
from ferroute.providers.anthropic import AnthropicDialect
from ferroute.providers.chat_completions import ChatCompletionsDialect
from ferroute.providers.http import HttpUpstream
from ferroute.providers.mock import MockSource
from ferroute.providers.responses import ResponsesDialect
from tests.support.grammar import check_stream
from tests.support.mock_upstream import SECRET
from tests.support.servers import Server, free_port, last_request, mock_upstream

KEY = "sk-provider-parts-test"
KEY_ENV = "FERROUTE_TEST_PROVIDER_PARTS_KEY"

# kind → (its dialect, a recorded stream the mock upstream replays, the path, the key's header and value)
KINDS: dict[str, tuple[type[Any], str, str, str, str]] = {
    "chat_completions": (
        ChatCompletionsDialect,
        "openai-gpt-4o-mini-text-usage",
        "/v1/chat/completions",
        "authorization",
        f"Bearer {KEY}",
    ),
    "anthropic": (AnthropicDialect, "claude-sonnet-4-thinking-text", "/v1/messages", "x-api-key", KEY),
    "responses": (ResponsesDialect, "openai-gpt-4o-text", "/v1/responses", "authorization", f"Bearer {KEY}"),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with mock_upstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def _config(kind: str, base_url: str, **extra: Any) -> ProviderConfig:
    return ProviderConfig(name="p", kind=kind, base_url=base_url, api_key_env=KEY_ENV, **extra)  # type: ignore[arg-type]


def _provider(kind: str, base_url: str, **extra: Any) -> Provider:
    """A provider made by hand from its two parts, as `build_providers` makes it."""
    config = _config(kind, base_url, **extra)
    dialect: Dialect = KINDS[kind][0](config)
    timeouts = TimeoutsConfig(connect=2)
    return Provider(config, dialect, HttpUpstream(config, dialect, timeouts), timeouts)


def _request(**fields: Any) -> ResponsesRequest:
    body = {"model": "m:p", "input": "Say hello.", "stream": True, **fields}
    return parse_request(json.dumps(body).encode(), max_depth=64, max_input_items=100)


async def _read(upstream: Upstream) -> bytes:
    assert upstream.chunks is not None
    try:
        return b"".join([chunk async for chunk in upstream.chunks])
    finally:
        await upstream.aclose()


def _translate(provider: Provider, raw: bytes) -> dict[str, Any]:
    translator = provider.translator(b'{"model":"m:p"}', model="m:p", store=False)
    translator.feed(raw)
    translator.finish()
    response: dict[str, Any] = json.loads(translator.response_json())
    return response


def _text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_one_http_upstream_speaks_each_dialect(upstream: Server, kind: str) -> None:
    """The same `HttpUpstream` sends each dialect's path, key header, own headers and body; the provider's
    translator (the dialect's) reads what comes back."""
    dialect_class, fixture, path, key_header, key_value = KINDS[kind]
    provider = _provider(kind, f"{upstream.url}/v1", anthropic_version="2099-01-01")
    request = _request()

    async def run() -> bytes:
        transport = StreamTransport()
        try:
            return await _read(await provider.open(request, f"fixture:{fixture}", transport))
        finally:
            await transport.aclose()

    raw = asyncio.run(run())
    seen = last_request(upstream)
    assert seen["path"] == path
    assert seen["headers"][key_header] == key_value
    assert ("anthropic-version" in seen["headers"]) == (kind == "anthropic")
    if kind == "anthropic":
        assert seen["headers"]["anthropic-version"] == "2099-01-01"
        assert "authorization" not in seen["headers"]
    assert seen["body"] == dialect_class(provider.config).request_body(request, f"fixture:{fixture}")
    response = _translate(provider, raw)
    assert response["status"] == "completed"
    assert _text(response)


def test_the_fast_path_and_httpx_send_the_same_request(upstream: Server) -> None:
    """The router's transport gets the request head as bytes; any other httpx transport gets an `httpx.Request`.
    The upstream cannot tell them apart, and the answer reads the same."""
    provider = _provider("anthropic", f"{upstream.url}/v1")
    request = _request(max_output_tokens=100)
    model = "fixture:claude-sonnet-4-thinking-text"
    seen = []
    raws = []
    for transport in (StreamTransport(), httpx.AsyncHTTPTransport()):

        async def run(transport: httpx.AsyncBaseTransport) -> bytes:
            try:
                return await _read(await provider.open(request, model, transport))
            finally:
                await transport.aclose()

        raws.append(asyncio.run(run(transport)))
        seen.append(last_request(upstream))
    assert raws[0] == raws[1]
    assert seen[0]["body"] == seen[1]["body"]
    assert seen[0]["headers"] == seen[1]["headers"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_upstream_maps_http_errors_for_every_dialect(upstream: Server, kind: str) -> None:
    """An HTTP error before the first byte is the router's error whatever the dialect, with nothing of the
    upstream's body; a 429 keeps only its Retry-After."""
    provider = _provider(kind, f"{upstream.url}/v1")

    async def run(model: str) -> RouterError:
        transport = StreamTransport()
        try:
            with pytest.raises(RouterError) as raised:
                await provider.open(_request(), model, transport)
            return raised.value
        finally:
            await transport.aclose()

    busy = asyncio.run(run("status:429"))
    assert (busy.status, busy.code, busy.headers) == (429, "rate_limit_exceeded", [(b"retry-after", b"7")])
    failed = asyncio.run(run("status:503"))
    assert (failed.status, failed.type, failed.code) == (502, "model_error", "upstream_error")
    for error in (busy, failed):
        assert SECRET not in error.body().decode() and KEY not in error.body().decode()


def test_an_upstream_nobody_listens_on_is_unreachable() -> None:
    provider = _provider("responses", f"http://127.0.0.1:{free_port()}/v1")

    async def run() -> None:
        transport = StreamTransport()
        try:
            await provider.open(_request(), "m", transport)
        finally:
            await transport.aclose()

    with pytest.raises(RouterError) as raised:
        asyncio.run(run())
    assert (raised.value.status, raised.value.code) == (502, "upstream_unreachable")
    assert "127.0.0.1" not in raised.value.message


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_whole_json_answer_is_read_by_the_dialect(upstream: Server, kind: str) -> None:
    """A server that ignores `stream` answers one JSON body: the upstream hands it back whole, and the translator
    reads it as the stream that says the same (`feed_whole`) or as a whole response (`convert`), alike."""
    provider = _provider(kind, f"{upstream.url}/v1")

    async def run() -> Upstream:
        transport = StreamTransport()
        try:
            return await provider.open(_request(), "json:openai-gpt-4o-mini-text-usage", transport)
        finally:
            await transport.aclose()

    opened = asyncio.run(run())
    assert opened.chunks is None and opened.body is not None
    translator = provider.translator(b'{"model":"m:p"}', model="m:p", store=False)
    streamed = check_stream(translator.feed_whole(opened.body))[1]
    converted = json.loads(provider.translator(b'{"model":"m:p"}', model="m:p", store=False).convert(opened.body))
    assert streamed["status"] == converted["status"] == "completed"
    assert _text(streamed) == _text(converted) != ""


def test_build_providers_gives_each_kind_its_parts(upstream: Server) -> None:
    """Every kind over HTTP is an `HttpUpstream` with its dialect; `mock` is the in-process source with the
    Chat Completions dialect. A provider's `open` is its source's own (no wrapper on the request path)."""
    base = f"{upstream.url}/v1"
    settings = parse_settings(
        "".join(f'[[providers]]\nname = "{k}"\nkind = "{k}"\nbase_url = "{base}"\n' for k in KINDS)
        + '[[providers]]\nname = "mock"\nkind = "mock"\n'
    )
    providers = build_providers(settings)
    expected = {
        "chat_completions": (ChatCompletionsDialect, HttpUpstream, _core.ChatCompletionsTranslator, False),
        "anthropic": (AnthropicDialect, HttpUpstream, _core.AnthropicTranslator, True),
        "responses": (ResponsesDialect, HttpUpstream, _core.ResponsesTranslator, True),
        "mock": (ChatCompletionsDialect, MockSource, _core.ChatCompletionsTranslator, False),
    }
    for name, (dialect, source, translator, keeps) in expected.items():
        provider = providers[name]
        assert (type(provider.dialect), type(provider.source)) == (dialect, source), name
        assert provider.translator is translator
        assert provider.keeps_encrypted_reasoning is keeps
        assert provider.open == provider.source.open
        assert provider.timeouts is settings.timeouts


def test_the_mock_source_checks_the_request_as_its_dialect_does() -> None:
    """The mock answers without a transport, and refuses what its dialect (Chat Completions) cannot say, with the
    same error an HTTP upstream of that dialect gives before sending anything."""
    mock = build_providers(parse_settings('[[providers]]\nname = "mock"\nkind = "mock"\n'))["mock"]
    http = _provider("chat_completions", f"http://127.0.0.1:{free_port()}/v1")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("the mock uses no transport")

    unusable = httpx.MockTransport(refuse)

    async def answer() -> bytes:
        return await _read(await _open(mock, _request(), unusable))

    assert _translate(mock, asyncio.run(answer()))["status"] == "completed"

    video = _request(input=[{"role": "user", "content": [{"type": "input_video", "video_url": "https://x.test/v"}]}])
    errors = []
    for provider in (mock, http):
        with pytest.raises(RouterError) as raised:
            asyncio.run(_open(provider, video, unusable))
        errors.append((raised.value.status, raised.value.message, raised.value.param))
    assert errors[0] == errors[1]
    assert errors[0][0] == 400


async def _open(provider: Provider, request: ResponsesRequest, transport: httpx.AsyncBaseTransport) -> Upstream:
    return await provider.open(request, "m", transport)


def test_a_provider_keeps_the_config_timeouts_it_was_given() -> None:
    settings = Settings(timeouts=TimeoutsConfig(connect=3))
    own = TimeoutsConfig(connect=7)
    config = ProviderConfig(name="p", kind="chat_completions", base_url="http://127.0.0.1:9/v1", timeouts=own)
    settings.providers = [config, ProviderConfig(name="q", kind="anthropic", base_url="http://127.0.0.1:9/v1")]
    providers = build_providers(settings)
    assert providers["p"].timeouts is own
    assert providers["q"].timeouts is settings.timeouts
    sources = [providers[name].source for name in ("p", "q")]
    assert [s.timeout.connect for s in sources if isinstance(s, HttpUpstream)] == [7, 3]

"""The official `openai` SDK against the router, with the built-in mock provider and through a Chat
Completions upstream. Every body the SDK receives is also checked: streams with `check_stream`,
JSON responses with `validate_response` (a recording transport keeps the raw bytes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.grammar import check_stream, validate_response
from tests.support.servers import Server, last_request, shared_router, shared_upstream

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


class _Tee(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, record: bytearray) -> None:
        self.inner = inner
        self.record = record

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.record.extend(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class RecordingTransport(httpx.BaseTransport):
    """Passes requests on and keeps every response body, to check them against the spec afterwards."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.bodies: list[tuple[int, str, bytearray]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        record = bytearray()
        self.bodies.append((response.status_code, response.headers.get("content-type", ""), record))
        assert isinstance(response.stream, httpx.SyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, record),
            extensions=response.extensions,
        )

    def check(self) -> int:
        for status, content_type, body in self.bodies:
            assert status == 200, bytes(body)
            if content_type.startswith("text/event-stream"):
                check_stream(bytes(body))
            else:
                validate_response(json.loads(body))
        return len(self.bodies)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_router()


@pytest.fixture
def client(server: Server) -> Iterator[openai.OpenAI]:
    transport = RecordingTransport()
    http_client = httpx.Client(transport=transport, timeout=30)
    yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", http_client=http_client, max_retries=0)
    assert transport.check() > 0
    http_client.close()


# Which model to ask for: the built-in mock, or a recorded upstream stream with the right shape (Chat Completions,
# Anthropic Messages with thinking, OpenAI Responses with a reasoning summary).
TEXT = {
    "mock": "ferroute-mock:mock",
    "upstream": "fixture:openai-gpt-4o-mini-text-usage:up",
    "anthropic": "fixture:claude-sonnet-4-thinking-text:anth",
    "responses": "fixture:openai-gpt-5-reasoning-summary-text:oai",
}
CALL = {
    "mock": "ferroute-mock:mock",
    "upstream": "fixture:openai-gpt-4o-mini-tool-call-usage:up",
    "anthropic": "fixture:claude-sonnet-4-thinking-tool-use:anth",
    "responses": "fixture:openai-gpt-5-reasoning-summary-function-call:oai",
}
BACKENDS = ["mock", "upstream", "anthropic", "responses"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_create(client: openai.OpenAI, backend: str) -> None:
    response = client.responses.create(model=TEXT[backend], input="Say hello in exactly 3 words.")
    assert response.status == "completed"
    assert response.model == TEXT[backend]
    assert response.output_text
    assert response.usage is not None and response.usage.total_tokens > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_streaming(client: openai.OpenAI, backend: str) -> None:
    events = list(client.responses.create(model=TEXT[backend], input="Count from 1 to 5.", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].type == "response.completed" and events[-1].response.output_text == text
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize("model", ["gen:up", "gen:oai"], ids=["chat_completions", "responses"])
def test_log_probabilities_through_the_sdk(client: openai.OpenAI, model: str) -> None:
    response = client.responses.create(
        model=model, input="hi", include=["message.output_text.logprobs"], top_logprobs=2
    )
    [message] = response.output
    assert message.type == "message" and message.content[0].type == "output_text"
    logprobs = message.content[0].logprobs or []
    assert [t.token for t in logprobs] == ["Hello", " from", " the", " mock", " upstream."]
    assert all(len(t.top_logprobs) == 2 for t in logprobs)
    with client.responses.stream(
        model=model, input="hi", include=["message.output_text.logprobs"], top_logprobs=1
    ) as stream:
        tokens = [t.token for e in stream if e.type == "response.output_text.delta" for t in e.logprobs]
    assert tokens == ["Hello", " from", " the", " mock", " upstream."]


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_helper_and_final_response(client: openai.OpenAI, backend: str) -> None:
    with client.responses.stream(model=TEXT[backend], input="Count from 1 to 5.") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas)


@pytest.mark.parametrize("backend", BACKENDS)
def test_function_calling_round_trip(client: openai.OpenAI, backend: str) -> None:
    question: list[Any] = [{"role": "user", "content": "What's the weather like in San Francisco?"}]
    first = client.responses.create(model=CALL[backend], input=question, tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls
    call = calls[0]
    arguments = json.loads(call.arguments)
    assert isinstance(arguments, dict)
    if backend == "mock":
        assert call.name == "get_weather"
        assert set(arguments) == {"location"}
    # Send the whole history back (the SDK's own output objects) with the tool's result.
    history = [*question, *first.output, {"type": "function_call_output", "call_id": call.call_id, "output": "18C"}]
    with client.responses.stream(model=TEXT[backend], input=history, tools=TOOLS) as stream:
        second = stream.get_final_response()
    assert second.status == "completed"
    assert second.output_text
    if backend == "mock":
        assert second.output_text == "The tool returned: 18C"
    elif backend == "responses":
        sent = last_request(shared_upstream())["body"]["input"]
        assert sent[-2]["type"] == "function_call" and sent[-2]["call_id"] == call.call_id
        assert sent[-1] == {"type": "function_call_output", "call_id": call.call_id, "output": "18C"}
    elif backend == "anthropic":
        sent = last_request(shared_upstream())["body"]["messages"]
        assert sent[-2]["content"][-1]["type"] == "tool_use" and sent[-2]["content"][-1]["id"] == call.call_id
        assert sent[-1] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.call_id,
                                                         "content": "18C"}]}  # fmt: skip
    else:
        sent = last_request(shared_upstream())["body"]["messages"]
        assert sent[-2]["tool_calls"][0]["id"] == call.call_id
        assert sent[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_streamed_function_call_events(client: openai.OpenAI, backend: str) -> None:
    with client.responses.stream(model=CALL[backend], input="weather in Paris?", tools=TOOLS) as stream:
        arguments_done = [event.arguments for event in stream if event.type == "response.function_call_arguments.done"]
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [c.arguments for c in calls] == arguments_done


def test_sdk_errors(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="m:mock", input="hi", temperature=5)
    assert "temperature" in str(bad.value)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m:nowhere", input="hi")
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="status:429:up", input="hi")
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="status:500:up", input="hi")
    client.close()

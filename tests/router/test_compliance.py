"""The HTTP tests of the Open Responses compliance suite (openresponses/openresponses,
`src/lib/compliance-tests.ts`), re-created: the same requests (sent as the suite sends them, with
`stream` set explicitly) and the same checks, plus this project's grammar check of every body.

Run against the built-in `mock` provider and through a Chat Completions mock upstream (which replays a
recorded stream of the right shape; there the translated upstream request is checked too). The same requests
and checks run over WebSocket mode too (`response.create` on `GET /v1/responses` upgraded: every response
streams, one JSON event per message), each message validated with `openresponses-types` and the grammar helper.
(The suite's own WebSocket and compaction tests are not in the copy of it this project could read;
`tests/router/test_websocket.py` and `tests/state/test_compaction.py` test what the spec says of them.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.grammar import EVENT_MODELS, check_events, check_stream, validate_response
from tests.support.servers import Server, last_request, shared_router, shared_upstream

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAABmklEQVR42tyWAaTyUBzFew/eG4AHz+MBSAHKBiJRG"
    "FKwIgQQJKLUIioBIhCAiCAAEizAQIAECaASqFFJq84nudjnaqvuPnxzgP9xfrq5938csPn7PwHTKSoViCIEAYEAMhmoKsU2mUCWEQqB5xEMIp/HaG"
    "QG2G6RSuH9HQ7H34rFrtPbdz4jl6PbwmEsl3QA1mt4vcRKk8dz9eg6IpF7tt9fzGY0gCgafFRFo5Blc5vLhf3eCOj1yNhM5GRMVK0aATxPZoz09YX"
    "jkQDmczJgquGQAPp9WwCNBgG027YACgUC6HRsAZRKBDAY2AJoNv/ZnwzA6WScznG3p4UAymXGAEkyXrTFAh8fLAGqagQAyGaZpYsi7bHTNPz8MEj/"
    "/LxuFPo+UBS8vb0KaLXubrRa7aX0RMLCykwmn0z3+XA4WACcTpCkh9MFAZpmuVXo+mO/w+/HZvNgbblcUCxaSo/Hyck80Yu6XXDcvfVZr79cvMZj"
    "uN2U9O9vKAqjZrfbIZ0mV4TUi9Xqz6jddNy//7+e3n8Fhf/Llo2kxi8AQyGRoDkmAhAAAAAASUVORK5CYII="
)
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
        "required": ["location"],
    },
}
WEATHER_INPUT = [{"type": "message", "role": "user", "content": "What's the weather like in San Francisco?"}]


def _has_output(response: dict[str, Any], events: list[dict[str, Any]]) -> None:
    assert response["output"], "Response has no output items"


def _completed(response: dict[str, Any], events: list[dict[str, Any]]) -> None:
    assert response["status"] == "completed", f'Expected status "completed" but got "{response["status"]}"'


def _has_function_call(response: dict[str, Any], events: list[dict[str, Any]]) -> None:
    assert any(item["type"] == "function_call" for item in response["output"])


def _function_call_events(response: dict[str, Any], events: list[dict[str, Any]]) -> None:
    types = [e["type"] for e in events]
    assert any(e["type"] == "response.output_item.added" and e["item"]["type"] == "function_call" for e in events)
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" in types
    assert any(e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call" for e in events)


@dataclass
class Case:
    id: str
    input: list[dict[str, Any]]
    validators: list[Callable[[dict[str, Any], list[dict[str, Any]]], None]]
    streaming: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    fixture: str = "openai-gpt-4o-mini-text-usage"  # the recorded upstream stream used through the upstream
    upstream_messages: list[dict[str, Any]] | None = None  # what the upstream must receive


CASES = [
    Case(
        "basic-response",
        [{"type": "message", "role": "user", "content": "Say hello in exactly 3 words."}],
        [_has_output, _completed],
    ),
    Case(
        "streaming-response",
        [{"type": "message", "role": "user", "content": "Count from 1 to 5."}],
        [_completed],
        streaming=True,
    ),
    Case(
        "system-prompt",
        [
            {"type": "message", "role": "system", "content": "You are a pirate. Always respond in pirate speak."},
            {"type": "message", "role": "user", "content": "Say hello."},
        ],
        [_has_output, _completed],
        upstream_messages=[
            {"role": "system", "content": "You are a pirate. Always respond in pirate speak."},
            {"role": "user", "content": "Say hello."},
        ],
    ),
    Case(
        "tool-calling",
        WEATHER_INPUT,
        [_has_output, _has_function_call],
        extra={"tools": [WEATHER_TOOL]},
        fixture="openai-gpt-4o-mini-tool-call-usage",
    ),
    Case(
        "tool-calling-streaming",
        WEATHER_INPUT,
        [_function_call_events],
        streaming=True,
        extra={"tools": [WEATHER_TOOL]},
        fixture="openai-gpt-4o-mini-tool-call-usage",
    ),
    Case(
        "image-input",
        [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What do you see in this image? Answer in one sentence."},
                    {"type": "input_image", "image_url": PNG},
                ],
            }
        ],
        [_has_output, _completed],
        upstream_messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What do you see in this image? Answer in one sentence."},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            }
        ],
    ),
    Case(
        "multi-turn",
        [
            {"type": "message", "role": "user", "content": "My name is Alice."},
            {
                "type": "message",
                "role": "assistant",
                "content": "Hello Alice! Nice to meet you. How can I help you today?",
            },
            {"type": "message", "role": "user", "content": "What is my name?"},
        ],
        [_has_output, _completed],
        upstream_messages=[
            {"role": "user", "content": "My name is Alice."},
            {"role": "assistant", "content": "Hello Alice! Nice to meet you. How can I help you today?"},
            {"role": "user", "content": "What is my name?"},
        ],
    ),
    Case(
        "assistant-phase",
        [
            {
                "type": "message",
                "role": "assistant",
                "phase": "commentary",
                "content": [{"type": "output_text", "text": "Let me check the notes first."}],
            },
            {
                "type": "message",
                "role": "assistant",
                "phase": "final_answer",
                "content": [{"type": "output_text", "text": "The meeting is at 3pm."}],
            },
            {"type": "message", "role": "user", "content": "When is the meeting again?"},
        ],
        [_has_output, _completed],
        upstream_messages=[
            {"role": "assistant", "content": "Let me check the notes first."},
            {"role": "assistant", "content": "The meeting is at 3pm."},
            {"role": "user", "content": "When is the meeting again?"},
        ],
    ),
]


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_router()


def _run(server: Server, case: Case, model: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    body = {"model": model, "input": case.input, **case.extra, "stream": case.streaming}
    headers = {"Authorization": "Bearer unused", "Content-Type": "application/json"}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, headers=headers, timeout=30) as r:
        raw = r.read()
        assert r.status_code == 200, f"HTTP {r.status_code}: {raw!r}"
    if not case.streaming:
        response: dict[str, Any] = httpx.Response(200, content=raw).json()
        validate_response(response)
        return response, []
    events, response = check_stream(raw)
    # The suite's SSE parser rejects any event type outside the spec's 24.
    assert {e["type"] for e in events} <= EVENT_MODELS.keys()
    assert events, "No streaming events received"
    return response, events


def _run_websocket(server: Server, case: Case, model: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    url = server.url.replace("http://", "ws://", 1) + "/v1/responses"
    with connect(url, additional_headers={"Authorization": "Bearer unused"}) as ws:
        ws.send(json.dumps({"type": "response.create", "model": model, "input": case.input, **case.extra}))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in ("response.completed", "response.incomplete", "response.failed"):
            message = ws.recv(timeout=30)
            assert isinstance(message, str), "every message is a text message"
            events.append(json.loads(message))
            assert events[-1]["type"] != "error", events[-1]
    response = check_events(events)  # (each event validated with openresponses-types, and the grammar)
    assert {e["type"] for e in events} <= EVENT_MODELS.keys()
    return response, events


RUNS = {"http": _run, "websocket": _run_websocket}


@pytest.mark.parametrize("transport", list(RUNS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_compliance_with_the_mock_provider(server: Server, case: Case, transport: str) -> None:
    response, events = RUNS[transport](server, case, "ferroute-mock:mock")
    for validate in case.validators:
        validate(response, events)


@pytest.mark.parametrize("transport", list(RUNS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_compliance_through_a_chat_completions_upstream(server: Server, case: Case, transport: str) -> None:
    response, events = RUNS[transport](server, case, f"fixture:{case.fixture}:up")
    for validate in case.validators:
        validate(response, events)
    if case.upstream_messages is not None:
        assert last_request(shared_upstream())["body"]["messages"] == case.upstream_messages

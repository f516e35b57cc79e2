"""The router in front of an Anthropic Messages upstream (the mock server process replaying recorded streams).

Every stream is checked with `tests.support.grammar.check_stream` and every body with `validate_response`; the request
mapping is checked on what the mock upstream received.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import ferroute
from ferroute._core import MockUpstream
from ferroute.models import parse_request
from ferroute.providers.anthropic import messages_request
from tests.support.fixtures import fixture_files
from tests.support.mock_upstream import SECRET
from tests.support.servers import (
    UPSTREAM_KEY,
    create,
    create_ok,
    last_request,
    router,
    shared_router,
    shared_upstream,
    stream,
)
from tests.support.summaries import anthropic_summary as summarise

ANTHROPIC = fixture_files("anthropic")
THINKING_TOOL = "fixture:claude-sonnet-4-thinking-tool-use:anth"


def direct(path: Path) -> dict[str, Any]:
    """The fixture through the translator alone (what the router must send, but for ids and timing)."""
    t = ferroute.AnthropicTranslator()
    t.feed(path.read_bytes())
    t.finish()
    response: dict[str, Any] = json.loads(t.response_json())
    return response


def without_signatures(items: list[Any]) -> list[Any]:
    return [(*item[:2], "") if item[0] == "reasoning" else item for item in items]


@pytest.mark.parametrize("path", ANTHROPIC, ids=lambda p: p.stem)
def test_recorded_streams_through_the_router(path: Path) -> None:
    server = shared_router()
    events, response = stream(server, {"model": f"fixture:{path.stem}:anth", "input": "Hi"})
    expected = direct(path)
    assert response["status"] == expected["status"]
    assert response["model"] == f"fixture:{path.stem}:anth"
    # Anthropic's signatures stay out of what the client sees unless it asks (include).
    assert summarise(response["output"]) == without_signatures(summarise(expected["output"]))
    assert all(item.get("encrypted_content") is None for item in response["output"])
    if expected["status"] == "failed":
        assert events[-2]["type"] == "error"
        assert response["error"]["code"] == expected["error"]["code"]
    else:
        assert response["usage"] == expected["usage"]
    if expected["status"] == "failed":  # not streamed: an HTTP error in the spec's shape
        failed = create(server, {"model": f"fixture:{path.stem}:anth", "input": "Hi"})
        assert failed.status_code == 502
        assert failed.json()["error"]["code"] == expected["error"]["code"]
        return
    body = create_ok(server, {"model": f"fixture:{path.stem}:anth", "input": "Hi"})
    assert summarise(body["output"]) == summarise(response["output"])


def test_the_upstream_gets_a_messages_request_with_its_own_auth() -> None:
    server = shared_router()
    tools = [{"type": "function", "name": "get_weather", "description": "Weather for a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]  # fmt: skip
    stream(
        server,
        {
            "model": "claude-test:anth",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Answer in English."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Weather?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0K"},
                    ],
                },
            ],
            "tools": tools,
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "temperature": 0.5,
        },
    )
    seen = last_request(shared_upstream())
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == UPSTREAM_KEY
    assert "authorization" not in seen["headers"]
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    body = seen["body"]
    assert body["model"] == "claude-test"
    assert body["stream"] is True
    assert body["max_tokens"] == 4096  # the provider's default_max_tokens
    assert body["system"] == "Be brief.\n\nAnswer in English."
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
        ]},
    ]  # fmt: skip
    assert body["tools"] == [{"name": "get_weather", "description": "Weather for a city.",
                              "input_schema": tools[0]["parameters"]}]  # fmt: skip
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["temperature"] == 0.5


def test_a_tool_round_trip_sends_thinking_back_with_its_signature() -> None:
    """previous_response_id: the stored turn (thinking with its signature, the tool call) goes back upstream."""
    server = shared_router()
    signature = direct(Path("tests/fixtures/anthropic/claude-sonnet-4-thinking-tool-use.sse"))["output"][0][
        "encrypted_content"
    ]
    assert signature
    _, first = stream(server, {"model": THINKING_TOOL, "input": "Weather in Florence?", "reasoning": {"effort": "low"}})
    call = next(item for item in first["output"] if item["type"] == "function_call")
    sent = last_request(shared_upstream())["body"]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["max_tokens"] > 2048
    second = create_ok(
        server,
        {
            "model": "fixture:claude-sonnet-4-text-after-tool-result:anth",
            "previous_response_id": first["id"],
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 24 C"}],
        },
    )
    assert second["status"] == "completed"
    messages = last_request(shared_upstream())["body"]["messages"]
    assert messages[0] == {"role": "user", "content": [{"type": "text", "text": "Weather in Florence?"}]}
    assistant = messages[1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0]["type"] == "thinking"
    assert assistant["content"][0]["signature"] == signature
    assert assistant["content"][-1] == {
        "type": "tool_use", "id": call["call_id"], "name": call["name"], "input": json.loads(call["arguments"]),
    }  # fmt: skip
    assert messages[2] == {
        "role": "user", "content": [{"type": "tool_result", "tool_use_id": call["call_id"], "content": "Sunny, 24 C"}],
    }  # fmt: skip
    # The stored response does not show the signature either.
    stored = httpx.get(f"{server.url}/v1/responses/{first['id']}", timeout=10).json()
    assert all(item.get("encrypted_content") is None for item in stored["output"])


def test_a_stateless_client_gets_sealed_reasoning_that_carries_the_signature_back() -> None:
    server = shared_router()
    signature = direct(Path("tests/fixtures/anthropic/claude-sonnet-4-thinking-tool-use.sse"))["output"][0][
        "encrypted_content"
    ]
    first = create_ok(
        server,
        {"model": THINKING_TOOL, "input": "Weather?", "store": False, "include": ["reasoning.encrypted_content"]},
    )
    reasoning = first["output"][0]
    assert reasoning["encrypted_content"].startswith("ferroute1.")
    assert signature not in json.dumps(first)
    call = first["output"][1]
    create_ok(
        server,
        {
            "model": "fixture:claude-sonnet-4-text-after-tool-result:anth",
            "store": False,
            "input": [
                {"role": "user", "content": "Weather?"},
                reasoning,
                call,
                {"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny"},
            ],
        },
    )
    thinking = last_request(shared_upstream())["body"]["messages"][1]["content"][0]
    assert thinking["type"] == "thinking"
    assert thinking["signature"] == signature
    assert thinking["thinking"] == reasoning["content"][0]["text"]


@pytest.mark.parametrize("status", [429, 500, 529])
def test_upstream_errors_before_the_first_byte(status: int) -> None:
    response = create(shared_router(), {"model": f"status:{status}:anth", "input": "Hi"})
    assert response.status_code == (429 if status == 429 else 502)
    assert SECRET not in response.text
    error = response.json()["error"]
    if status == 429:
        assert (error["type"], error["code"]) == ("too_many_requests", "rate_limit_exceeded")
        assert response.headers["retry-after"] == "7"
    else:
        assert (error["type"], error["code"]) == ("model_error", "upstream_error")
        assert error["message"] == f"provider 'anth' failed (HTTP {status})"


def _mapped(body: dict[str, Any]) -> dict[str, Any]:
    request = parse_request(json.dumps({"model": "m", **body}).encode(), max_depth=64, max_input_items=100)
    return messages_request(request, "m")


def test_a_json_schema_format_is_anthropics_structured_output() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}  # fmt: skip
    text = {"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}}
    assert _mapped({"input": "x", "text": text})["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }
    assert "output_config" not in _mapped({"input": "x", "text": {"format": {"type": "text"}}})
    # Through the router: the upstream gets it, and the response echoes the format the client sent.
    response = create_ok(shared_router(), {"model": "claude:anth", "input": "Where?", "text": text})
    assert last_request(shared_upstream())["body"]["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }
    assert response["text"]["format"]["type"] == "json_schema" and response["text"]["format"]["schema"] == schema


def test_request_mapping_edges() -> None:
    # Assistant and tool turns of one role in a row are one message; reasoning without a signature stays out.
    mapped = _mapped({"input": [
        {"role": "user", "content": "a"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "t"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "b"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "r"}]},
        {"role": "user", "content": "next"},
    ]})  # fmt: skip
    assert mapped["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "b"},
                                          {"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1",
                                      "content": [{"type": "text", "text": "r"}]},
                                     {"type": "text", "text": "next"}]},
    ]  # fmt: skip
    assert _mapped({"input": "x", "max_output_tokens": 50})["max_tokens"] == 50
    # Thinking fits under the request's own limit (reasoning counts inside max_output_tokens), or is not asked for.
    fitted = _mapped({"input": "x", "max_output_tokens": 3000, "reasoning": {"effort": "high"}})
    assert (fitted["max_tokens"], fitted["thinking"]) == (3000, {"type": "enabled", "budget_tokens": 2999})
    small = _mapped({"input": "x", "max_output_tokens": 1000, "reasoning": {"effort": "high"}})
    assert (small["max_tokens"], "thinking" in small) == (1000, False)
    unset = _mapped({"input": "x", "reasoning": {"effort": "medium"}})
    assert (unset["max_tokens"], unset["thinking"]["budget_tokens"]) == (8192 + 4096, 8192)
    assert "thinking" not in _mapped({"input": "x", "reasoning": {"effort": "minimal"}})
    redacted = _mapped({"input": [{"role": "user", "content": "a"},
                                  {"type": "reasoning", "summary": [], "encrypted_content": "R"},
                                  {"role": "user", "content": "b"}]})  # fmt: skip
    assert redacted["messages"][1] == {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "R"}]}
    pdf = _mapped({"input": [{"role": "user", "content": [
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        {"type": "input_image", "image_url": "https://example.com/cat.jpg"}]}]})  # fmt: skip
    assert pdf["messages"][0]["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
         "title": "a.pdf"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "presence_penalty": 0.5}, "presence_penalty"),
        ({"input": "x", "text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"input": [{"role": "assistant", "content": "hi"}]}, "input"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/bmp;base64,Qk0="}]}]},
         "input[0].content[0].image_url"),
        ({"input": [{"role": "user", "content": "a"},
                    {"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}, "input[1].arguments"),
        ({"input": "x", "tool_choice": "required"}, "tool_choice"),
        ({"input": "x", "temperature": 0.2, "reasoning": {"effort": "low"}}, "temperature"),
        ({"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": "required",
          "reasoning": {"effort": "low"}}, "tool_choice"),
    ],
)  # fmt: skip
def test_what_an_anthropic_upstream_cannot_take_is_a_400_naming_the_param(body: dict[str, Any], param: str) -> None:
    response = create(shared_router(), {"model": "claude:anth", **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_the_router_in_front_of_the_rust_mock_speaking_messages() -> None:
    """`ferroute mock-upstream`'s Anthropic dialect (reasoning, text, a tool call in fragments), streamed and whole."""
    with MockUpstream(tokens=6, reasoning_tokens=3, tool_call=True) as mock:
        config = f'[[providers]]\nname = "claude"\nkind = "anthropic"\nbase_url = "{mock.url}/v1"\n'
        with router(config) as server:
            _, streamed = stream(server, {"model": "claude-x:claude", "input": "Weather?"})
            whole = create_ok(server, {"model": "claude-x:claude", "input": "Weather?"})
    for response in (streamed, whole):
        assert response["status"] == "completed"
        types = [item["type"] for item in response["output"]]
        assert types == ["reasoning", "message", "function_call"]
        assert response["output"][0]["content"][0]["text"]
        assert json.loads(response["output"][2]["arguments"])
        assert response["usage"]["output_tokens"] > 0
    assert summarise(streamed["output"]) == summarise(whole["output"])


def test_input_items_do_not_show_the_signature_a_sealed_item_carried_in() -> None:
    server = shared_router()
    first = create_ok(
        server,
        {"model": THINKING_TOOL, "input": "Weather?", "store": False, "include": ["reasoning.encrypted_content"]},
    )
    reasoning, call = first["output"]
    second = create_ok(
        server,
        {
            "model": "fixture:claude-sonnet-4-text-after-tool-result:anth",
            "input": [
                {"role": "user", "content": "Weather?"},
                reasoning,
                call,
                {"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny"},
            ],
        },
    )
    listed = httpx.get(f"{server.url}/v1/responses/{second['id']}/input_items?order=asc", timeout=10).json()["data"]
    assert [item["type"] for item in listed] == ["message", "reasoning", "function_call", "function_call_output"]
    assert listed[1].get("encrypted_content") is None
    assert listed[1]["content"][0]["text"] == reasoning["content"][0]["text"]


def test_a_whole_message_where_a_stream_was_asked_for() -> None:
    """A server that ignores `stream`: the whole message answers a streaming client (as a stream) and a
    non-streaming one alike."""
    server = shared_router()
    expected = [
        ("reasoning", "Look it up.", ""),
        ("message", "Checking."),
        ("function_call", "toolu_whole", "get_weather", {"city": "Paris"}),
    ]
    _, streamed = stream(server, {"model": "json:whole:anth", "input": "Weather?"})
    whole = create_ok(server, {"model": "json:whole:anth", "input": "Weather?"})
    for response in (streamed, whole):
        assert response["status"] == "completed"
        assert summarise(response["output"]) == expected
        assert response["usage"]["total_tokens"] == 17

"""The router in front of an OpenAI Responses upstream (the mock server process replaying recorded streams).

Every stream is checked with `tests.support.grammar.check_stream` and every body with `validate_response`; the request
the upstream got is checked on what the mock received.
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
from ferroute.providers.responses import responses_request
from tests.support.fixtures import FIXTURES, fixture_files
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
from tests.support.summaries import responses_summary as summarise

RESPONSES = fixture_files("responses")
SUMMARY_CALL = "openai-gpt-5-reasoning-summary-function-call"


def direct(path: Path) -> dict[str, Any]:
    t = ferroute.ResponsesTranslator()
    t.feed(path.read_bytes())
    t.finish()
    response: dict[str, Any] = json.loads(t.response_json())
    return response


def upstream_blob(name: str) -> tuple[str, str]:
    """The (id, encrypted_content) of the recorded stream's reasoning item, as its output_item.done has them."""
    for line in (FIXTURES / "responses" / f"{name}.sse").read_text().splitlines():
        if line.startswith("data: {") and '"response.output_item.done"' in line:
            item = json.loads(line[6:])["item"]
            if item["type"] == "reasoning":
                return item["id"], item["encrypted_content"]
    raise AssertionError("no reasoning item")


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
def test_recorded_streams_through_the_router(path: Path) -> None:
    server = shared_router()
    model = f"fixture:{path.stem}:oai"
    events, response = stream(server, {"model": model, "input": "Hi"})
    expected = direct(path)
    assert response["status"] == expected["status"]
    assert response["model"] == model
    # The upstream's encrypted_content stays out of what the client sees unless it asks (include).
    shown = [(*item[:3], False) if item[0] == "reasoning" else item for item in summarise(expected["output"])]
    assert summarise(response["output"]) == shown
    if expected["status"] == "failed":
        assert events[-2]["type"] == "error"
        failed = create(server, {"model": model, "input": "Hi"})
        assert failed.status_code == 502
        return
    assert response["usage"] == expected["usage"]
    body = create_ok(server, {"model": model, "input": "Hi"})
    assert summarise(body["output"]) == summarise(response["output"])


def test_the_upstream_gets_a_stateless_responses_request() -> None:
    server = shared_router()
    tools = [
        {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}},
        {"type": "web_search"},
    ]
    body = {
        "model": "gpt-test:oai",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": "Weather?", "id": "msg_client1"}],
        "tools": tools,
        "tool_choice": "auto",
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "metadata": {"k": "v"},
        "include": ["message.output_text.logprobs"],
        "max_output_tokens": 100,
    }
    _, response = stream(server, body)
    assert response["status"] == "completed"
    seen = last_request(shared_upstream())
    assert seen["path"] == "/v1/responses"
    assert seen["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    sent = seen["body"]
    assert sent["model"] == "gpt-test"
    # (The router's own `include`: the reasoning blob, and the client's log probabilities when it asked for them.)
    include = ["reasoning.encrypted_content", "message.output_text.logprobs"]
    assert (sent["stream"], sent["store"], sent["include"]) == (True, False, include)
    assert sent["input"] == [{"type": "message", "role": "user", "content": "Weather?"}]
    assert sent["instructions"] == "Be brief."
    assert [tool["type"] for tool in sent["tools"]] == ["function", "web_search"]
    assert sent["text"]["format"]["schema"] == {"type": "object"}
    assert (sent["reasoning"], sent["metadata"], sent["max_output_tokens"]) == (body["reasoning"], {"k": "v"}, 100)
    assert "previous_response_id" not in sent and "background" not in sent


def test_a_continued_turn_sends_reasoning_back_with_the_upstreams_id_and_blob() -> None:
    server = shared_router()
    upstream_id, blob = upstream_blob(SUMMARY_CALL)
    _, first = stream(server, {"model": f"fixture:{SUMMARY_CALL}:oai", "input": "Weather in Florence?"})
    call = next(item for item in first["output"] if item["type"] == "function_call")
    create_ok(
        server,
        {
            "model": "fixture:openai-gpt-4o-text:oai",
            "previous_response_id": first["id"],
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny"}],
        },
    )
    sent = last_request(shared_upstream())["body"]["input"]
    assert [item["type"] for item in sent] == ["message", "reasoning", "function_call", "function_call_output"]
    reasoning = sent[1]
    assert (reasoning["id"], reasoning["encrypted_content"]) == (upstream_id, blob)
    assert reasoning["summary"][0]["text"]
    assert sent[2]["call_id"] == call["call_id"] and "id" not in sent[2]
    # GET shows no encrypted_content either.
    stored = httpx.get(f"{server.url}/v1/responses/{first['id']}", timeout=10).json()
    assert all(item.get("encrypted_content") is None for item in stored["output"])


def test_a_stateless_client_carries_the_upstreams_blob_back_sealed() -> None:
    server = shared_router()
    upstream_id, blob = upstream_blob(SUMMARY_CALL)
    first = create_ok(
        server,
        {
            "model": f"fixture:{SUMMARY_CALL}:oai",
            "input": "Hi",
            "store": False,
            "include": ["reasoning.encrypted_content"],
        },
    )
    reasoning = first["output"][0]
    assert reasoning["encrypted_content"].startswith("ferroute1.") and blob not in json.dumps(first)
    create_ok(
        server,
        {
            "model": "fixture:openai-gpt-4o-text:oai",
            "store": False,
            "input": [{"role": "user", "content": "Hi"}, reasoning],
        },
    )
    sent = last_request(shared_upstream())["body"]["input"][1]
    assert (sent["type"], sent["id"], sent["encrypted_content"]) == ("reasoning", upstream_id, blob)


@pytest.mark.parametrize("status", [429, 500])
def test_upstream_errors_before_the_first_byte(status: int) -> None:
    response = create(shared_router(), {"model": f"status:{status}:oai", "input": "Hi"})
    assert response.status_code == (429 if status == 429 else 502)
    assert SECRET not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "7"


def test_reasoning_from_another_upstream_goes_without_its_blob() -> None:
    request = parse_request(
        json.dumps(
            {
                "model": "m",
                "input": [
                    {"role": "user", "content": "a"},
                    {
                        "type": "reasoning",
                        "id": "rs_router",
                        "summary": [],
                        "encrypted_content": "EqQBCkYI-anthropic-signature",
                        "content": [{"type": "reasoning_text", "text": "t"}],
                    },
                ],
            }
        ).encode(),
        max_depth=64,
        max_input_items=10,
    )
    sent = responses_request(request, "m")["input"][1]
    assert sent == {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "t"}]}


def test_the_router_in_front_of_the_rust_mock_speaking_responses() -> None:
    """`ferroute mock-upstream`'s Responses dialect (reasoning, text, a tool call in fragments), streamed and whole."""
    with MockUpstream(tokens=6, reasoning_tokens=3, tool_call=True) as mock:
        config = f'[[providers]]\nname = "oai"\nkind = "responses"\nbase_url = "{mock.url}/v1"\n'
        with router(config) as server:
            _, streamed = stream(server, {"model": "gpt-x:oai", "input": "Weather?"})
            whole = create_ok(server, {"model": "gpt-x:oai", "input": "Weather?"})
    for response in (streamed, whole):
        assert response["status"] == "completed"
        assert [item["type"] for item in response["output"]] == ["reasoning", "message", "function_call"]
        assert json.loads(response["output"][2]["arguments"])
        assert response["usage"]["output_tokens"] > 0
    assert summarise(streamed["output"]) == summarise(whole["output"])


def test_a_whole_response_where_a_stream_was_asked_for() -> None:
    server = shared_router()
    expected = [
        ("reasoning", ["Look it up."], "", False),
        ("message", "Checking."),
        ("function_call", "call_whole", "get_weather", {"city": "Paris"}),
    ]
    _, streamed = stream(server, {"model": "json:whole:oai", "input": "Weather?"})
    whole = create_ok(server, {"model": "json:whole:oai", "input": "Weather?"})
    for response in (streamed, whole):
        assert response["status"] == "completed"
        assert summarise(response["output"]) == expected
        assert response["usage"]["total_tokens"] == 17


@pytest.mark.parametrize("model", ["gen:up", "gen:oai"], ids=["chat_completions", "responses"])
def test_output_text_log_probabilities_when_asked_for(model: str) -> None:
    # `include: ["message.output_text.logprobs"]` asks the upstream for them (Chat Completions: `logprobs: true`,
    # `top_logprobs`; Responses: the same `include`), and each token's come with its text: in the delta events, in
    # the part's `output_text.done` and in the response (every event validated by openresponses-types).
    server = shared_router()
    body = {"model": model, "input": "hi", "include": ["message.output_text.logprobs"], "top_logprobs": 2}
    events, streamed = stream(server, body)
    sent = last_request(shared_upstream())["body"]
    if model.endswith(":up"):
        assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    else:
        assert "message.output_text.logprobs" in sent["include"] and sent["top_logprobs"] == 2
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert [len(e["logprobs"]) for e in deltas] == [1] * 5
    assert [len(e["logprobs"][0]["top_logprobs"]) for e in deltas] == [2] * 5
    whole = create_ok(server, body)
    for response in (streamed, whole):
        part = response["output"][0]["content"][0]
        assert [t["token"] for t in part["logprobs"]] == ["Hello", " from", " the", " mock", " upstream."]
        assert part["logprobs"][4]["bytes"] == list(b" upstream."), "(the upstream's null: the token's UTF-8)"
        assert part["logprobs"][0]["logprob"] == -0.125
    [done] = [e for e in events if e["type"] == "response.output_text.done"]
    assert done["logprobs"] == streamed["output"][0]["content"][0]["logprobs"]
    # Not asked for: none asked of the upstream, none given.
    _, plain = stream(server, {"model": model, "input": "hi"})
    assert "logprobs" not in last_request(shared_upstream())["body"]
    assert plain["output"][0]["content"][0]["logprobs"] == []

"""`ferroute serve` with no config file (the built-in mock provider), over HTTP: answers, and request errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ferroute.models import parse_request
from ferroute.providers.mock import choose_tool, schema_instance
from tests.support.servers import Server, create, create_ok, shared_plain, stream

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["location", "unit"],
    },
}


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_plain()


def test_health_and_models(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list"
    assert {"id": "ferroute-mock:mock", "object": "model", "created": 0, "owned_by": "mock"} in models["data"]


def test_text_non_streaming_echoes_the_model_and_settings(server: Server) -> None:
    body = {"model": "anything", "input": "Say hi", "temperature": 0.3, "metadata": {"k": "v"}, "store": False}
    response = create_ok(server, body)
    assert response["status"] == "completed"
    assert response["model"] == "anything"
    assert response["temperature"] == 0.3
    assert response["metadata"] == {"k": "v"}
    assert response["store"] is False
    [message] = response["output"]
    assert message["content"][0]["text"].endswith("You said: Say hi")
    assert response["usage"]["output_tokens"] > 0


def test_store_echoes_what_was_done(server: Server) -> None:
    # Stored by default (the sqlite store in the working directory); `store: false` keeps nothing.
    assert create_ok(server, {"model": "m", "input": "hi"})["store"] is True
    assert create_ok(server, {"model": "m", "input": "hi", "store": True})["store"] is True
    assert create_ok(server, {"model": "m", "input": "hi", "store": False})["store"] is False


def test_text_streaming(server: Server) -> None:
    events, response = stream(server, {"model": "m:mock", "input": "Count from 1 to 5."})
    assert response["model"] == "m:mock"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 3
    assert "".join(deltas) == response["output"][0]["content"][0]["text"]


def test_the_same_request_gives_the_same_answer(server: Server) -> None:
    body = {"model": "m", "input": "Be deterministic"}
    first, second = create_ok(server, body), create_ok(server, body)
    assert first["output"][0]["content"] == second["output"][0]["content"]
    assert first["id"] != second["id"]


def test_reasoning_then_text(server: Server) -> None:
    events, response = stream(server, {"model": "m", "input": "Think first", "reasoning": {"effort": "low"}})
    assert [item["type"] for item in response["output"]] == ["reasoning", "message"]
    assert any(e["type"] == "response.reasoning.delta" for e in events)
    assert response["reasoning"] == {"effort": "low", "summary": None}


@pytest.mark.parametrize("streaming", [False, True])
def test_function_call_with_schema_valid_arguments(server: Server, streaming: bool) -> None:
    body = {"model": "m", "input": "What's the weather like in Paris?", "tools": [WEATHER]}
    response = stream(server, body)[1] if streaming else create_ok(server, body)
    [call] = response["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"location": "example", "unit": "c"}


def test_no_call_when_not_asked_or_after_the_result(server: Server) -> None:
    unrelated = create_ok(server, {"model": "m", "input": "Tell me a joke", "tools": [WEATHER]})
    assert unrelated["output"][0]["type"] == "message"
    forbidden = create_ok(server, {"model": "m", "input": "weather?", "tools": [WEATHER], "tool_choice": "none"})
    assert forbidden["output"][0]["type"] == "message"
    required = create_ok(
        server, {"model": "m", "input": "Tell me a joke", "tools": [WEATHER], "tool_choice": "required"}
    )
    assert required["output"][0]["type"] == "function_call"


def test_function_calling_round_trip(server: Server) -> None:
    first = create_ok(server, {"model": "m", "input": "weather in Paris?", "tools": [WEATHER]})
    call = first["output"][0]
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "weather in Paris?"},
        call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temp": 21}'},
    ]
    second = create_ok(server, {"model": "m", "input": history, "tools": [WEATHER]})
    assert second["output"][0]["content"][0]["text"] == 'The tool returned: {"temp": 21}'


def test_json_schema_output(server: Server) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]}
    text = {"format": {"type": "json_schema", "name": "num", "schema": schema, "strict": True}}
    response = create_ok(server, {"model": "m", "input": "a number", "text": text})
    assert json.loads(response["output"][0]["content"][0]["text"]) == {"n": 3}
    assert response["text"]["format"]["name"] == "num"


def test_max_output_tokens_gives_incomplete(server: Server) -> None:
    events, response = stream(server, {"model": "m", "input": "long answer please", "max_output_tokens": 3})
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-1]["type"] == "response.incomplete"


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "m", "input": "x", "bogus": 1}, "bogus", "unknown_parameter"),
        ({"input": "x"}, "model", "missing_required_parameter"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "temperature", "invalid_value"),
        ({"model": "m", "input": "x", "temperature": 3}, "temperature", "invalid_value"),
        (
            {"model": "m", "input": [{"type": "message", "role": "user", "content": [{"type": "input_txt"}]}]},
            "input[0].content[0].type",
            "invalid_type",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": "x", "extra": 1}]},
            "input[0].extra",
            "unknown_parameter",
        ),
        (
            {"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
            "input[0].arguments",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "input": "x", "tools": [{"type": "function", "name": "bad name"}]},
            "tools[0].name",
            "invalid_value",
        ),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
            "text.format.schema",
            "missing_required_parameter",
        ),
        ({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name", None),
        ({"model": "m", "input": "x", "background": True, "store": False}, "store", None),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
            "input[0].content[0].file_data",
            None,
        ),
    ],
)
def test_bad_requests_are_400_naming_the_param(
    server: Server, body: dict[str, Any], param: str, code: str | None
) -> None:
    error = _error(create(server, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_invalid_json_and_too_deep_json(server: Server) -> None:
    url = f"{server.url}/v1/responses"
    assert _error(httpx.post(url, content=b'{"model": "m", '), 400)["code"] == "invalid_json"
    assert _error(httpx.post(url, content=b"[1, 2]"), 400)["code"] == "invalid_json"
    deep = b'{"model": "m", "input": "x", "metadata": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001
    assert _error(httpx.post(url, content=deep), 400)["code"] == "json_too_deep"
    # the server is still there
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_body_over_the_limit_is_413(server: Server) -> None:
    big = json.dumps({"model": "m", "input": "x" * (17 * 1024 * 1024)}).encode()
    error = _error(httpx.post(f"{server.url}/v1/responses", content=big, timeout=60), 413)
    assert error["code"] == "request_too_large"


def test_routes_and_methods(server: Server) -> None:
    assert _error(httpx.get(f"{server.url}/v1/responses"), 405)["code"] == "method_not_allowed"
    assert _error(httpx.get(f"{server.url}/nowhere"), 404)["type"] == "not_found"
    assert _error(httpx.get(f"{server.url}/v1/responses/resp_123"), 404)["code"] == "not_found"
    assert _error(httpx.put(f"{server.url}/v1/responses/resp_123"), 405)["code"] == "method_not_allowed"


def test_unknown_ids_are_404(server: Server) -> None:
    # An id or item that was never stored: 404 before anything goes upstream.
    body = {"model": "m", "input": "x", "previous_response_id": "resp_1"}
    assert _error(create(server, body), 404)["param"] == "previous_response_id"
    body = {"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}
    assert _error(create(server, body), 404)["param"] == "input[0].id"


def test_accepts_the_openresponses_version_header(server: Server) -> None:
    create_ok(server, {"model": "m", "input": "hi"}, headers={"OpenResponses-Version": "latest"})


# --- the mock's choices, without a server -------------------------------------------------------


def _request(body: dict[str, Any]) -> Any:
    return parse_request(json.dumps({"model": "m", **body}).encode(), max_depth=64, max_input_items=100)


def test_mock_tool_choice_rules() -> None:
    tools = [WEATHER, {"type": "function", "name": "send_email", "parameters": {"type": "object"}}]
    assert choose_tool(_request({"input": "email Bob", "tools": tools})).name == "send_email"
    assert choose_tool(_request({"input": "hello", "tools": tools})) is None
    named = {"type": "function", "name": "send_email"}
    assert choose_tool(_request({"input": "hello", "tools": tools, "tool_choice": named})).name == "send_email"
    allowed = {"type": "allowed_tools", "tools": [{"type": "function", "name": "send_email"}], "mode": "required"}
    assert choose_tool(_request({"input": "weather", "tools": tools, "tool_choice": allowed})).name == "send_email"


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"type": "object", "properties": {"a": {"type": "string"}}}, {}),
        ({"type": "object", "properties": {"a": {"type": "integer", "minimum": 5}}, "required": ["a"]}, {"a": 5}),
        ({"type": "array", "items": {"type": "boolean"}, "minItems": 2}, [False, False]),
        ({"type": ["null", "number"], "exclusiveMinimum": 0}, 1),
        ({"anyOf": [{"const": "x"}, {"type": "string"}]}, "x"),
        ({"$defs": {"d": {"type": "string", "format": "date"}}, "$ref": "#/$defs/d"}, "2024-01-01"),
        ({"type": "string", "minLength": 10}, "examplexxx"),
    ],
)
def test_schema_instance(schema: dict[str, Any], instance: Any) -> None:
    assert schema_instance(schema) == instance


def test_the_access_log_has_one_json_line_per_request_without_the_key_and_arrives_within_a_second() -> None:
    """A real `ferroute serve` with `PYTHONUNBUFFERED=1` (container images set it; the handler batches lines
    itself, so that does not bring back a write per request): every request gets its line, soon, and the API key
    never appears in it."""
    import time

    from tests.support.servers import router

    key = "sk-test-access-log-secret-0123456789"
    config = f'[server]\napi_keys = ["{key}"]\n[store]\nbackend = "memory"\n'
    with router(config, env={"PYTHONUNBUFFERED": "1"}) as server:
        headers = {"Authorization": f"Bearer {key}"}
        ids = []
        for text in ("prompt-alpha-7f3", "prompt-beta-9c1"):
            answer = httpx.post(f"{server.url}/v1/responses", json={"model": "m:mock", "input": text}, headers=headers)
            assert answer.status_code == 200
            ids.append(answer.json()["id"])
        assert httpx.post(f"{server.url}/v1/responses", json={"model": "m:mock", "input": "x"}).status_code == 401
        deadline = time.monotonic() + 3
        lines: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            lines = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"method"')]
            lines = [line for line in lines if line["path"] == "/v1/responses"]  # (not the readiness polls)
            if len(lines) >= 3:
                break
            time.sleep(0.05)
        log = server.log()
    assert [(line["status"], line["path"]) for line in lines[:3]] == [(200, "/v1/responses")] * 2 + [
        (401, "/v1/responses")
    ]
    assert [line.get("response_id") for line in lines[:2]] == ids
    assert all(line["duration_ms"] >= 0 for line in lines)
    assert key not in log
    assert "prompt-alpha-7f3" not in log and "prompt-beta-9c1" not in log  # (no prompt text unless configured)

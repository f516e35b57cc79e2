"""The router in front of a Chat Completions upstream (a mock server process replaying recorded streams).

Every stream is checked with `tests.support.grammar.check_stream` and every body with `validate_response`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import ferroute
from ferroute.errors import RouterError
from ferroute.models import parse_request
from ferroute.providers.chat_completions import chat_request
from tests.support.fixtures import fixture_files
from tests.support.grammar import check_stream
from tests.support.mock_upstream import SECRET
from tests.support.servers import (
    ROUTER_ENV,
    ROUTER_KEY,
    UPSTREAM_KEY,
    Server,
    create,
    create_ok,
    last_request,
    raw_stream,
    router,
    shared_router,
    shared_upstream,
    stream,
    upstream_config,
)

FIXTURES = [path.stem for path in fixture_files("chat_completions")]


# Every case runs against the default serving stack (Granian's ASGI interface, uvloop), against the other
# one `ferroute serve` offers (RSGI, asyncio's loop), and with Granian's own task implementation (its
# tasks cannot be cancelled, so the app runs each request's work in a task of its own there): the
# behaviour must be the same.
@pytest.fixture(
    scope="module",
    params=["", "--interface rsgi --loop asyncio", "--task-impl rust"],
    ids=["asgi-uvloop", "rsgi-asyncio", "asgi-rust-tasks"],
)
def server(request: pytest.FixtureRequest) -> Server:
    return shared_router(request.param)


@pytest.fixture(scope="module")
def upstream() -> Server:
    return shared_upstream()


def _comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events without what differs between two translations of the same bytes (ids, times, model)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: clean(v)
                for k, v in value.items()
                if k not in ("id", "item_id", "created_at", "completed_at", "model")
            }
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return [clean(e) for e in events]


def _direct(name: str, model: str) -> list[dict[str, Any]]:
    """The events of translating the fixture in-process (what the router must send)."""
    # The router stores by default, and says so.
    translator = ferroute.ChatCompletionsTranslator({"model": model, "input": "hi"}, store=True)
    raw = (fixture_files("chat_completions")[FIXTURES.index(name)]).read_bytes()
    return check_stream(translator.feed(raw) + translator.finish())[0]


@pytest.mark.parametrize("name", FIXTURES)
def test_recorded_streams_pass_through_unchanged(server: Server, name: str) -> None:
    model = f"fixture:{name}:up"
    events, response = stream(server, {"model": model, "input": "hi"})
    assert response["model"] == model
    assert _comparable(events) == _comparable(_direct(name, model))


@pytest.mark.parametrize("name", ["vllm-qwen3-reasoning-content-usage", "openai-gpt-4o-parallel-tool-calls-usage"])
def test_tiny_upstream_reads_give_the_same_stream(server: Server, name: str) -> None:
    events, _ = stream(server, {"model": f"fixture:{name}?chunk=7:up", "input": "hi"})
    assert _comparable(events) == _comparable(_direct(name, f"fixture:{name}?chunk=7:up"))


@pytest.mark.parametrize("name", ["openrouter-claude-reasoning-tool-call", "openai-gpt-4o-parallel-tool-calls-usage"])
def test_crlf_line_ends_give_the_same_stream(server: Server, name: str) -> None:
    events, _ = stream(server, {"model": f"fixture:{name}?crlf=1&chunk=5:up", "input": "hi"})
    assert _comparable(events) == _comparable(_direct(name, f"fixture:{name}?crlf=1&chunk=5:up"))


@pytest.mark.parametrize("name", FIXTURES)
def test_recorded_streams_non_streaming(server: Server, name: str) -> None:
    model = f"fixture:{name}:up"
    expected = _direct(name, model)[-1]["response"]
    if expected["status"] == "failed":
        response = create(server, {"model": model, "input": "hi"})
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["type"] == "model_error"
        assert error["message"] == expected["error"]["message"]
    else:
        body = create_ok(server, {"model": model, "input": "hi"})
        assert _comparable([body]) == _comparable([expected])


def test_the_upstream_request(server: Server, upstream: Server) -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": True}
    body = {
        "model": "fixture:openai-gpt-4o-mini-text-usage:up",
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "developer", "content": "Use metric units."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
                {"type": "input_image", "image_url": image},
            ]},
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "Look closer."}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat."}],
             "phase": "final_answer"},
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "21C"},
            {"role": "user", "content": [{"type": "input_file", "filename": "a.pdf", "file_data": "JVBERi0="}]},
        ],
        "tools": [weather],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        "temperature": 0.2,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "max_output_tokens": 256,
        "reasoning": {"effort": "high"},
        "metadata": {"trace": "1"},
        "store": False,
    }  # fmt: skip
    create_ok(server, body)
    sent = last_request(upstream)
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent["body"] == {
        "model": "fixture:openai-gpt-4o-mini-text-usage",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use metric units."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": image}},
            ]},
            {"role": "assistant", "reasoning_content": "Look closer.", "content": "A cat."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
            {"role": "user", "content": [
                {"type": "file",
                 "file": {"file_data": "data:application/octet-stream;base64,JVBERi0=", "filename": "a.pdf"}},
            ]},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"},
                                                    "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"},
                                                                   "strict": True}},
        "temperature": 0.2,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "max_tokens": 256,
        "reasoning_effort": "high",
    }  # fmt: skip


def test_allowed_tools_only_sends_the_allowed_ones(server: Server, upstream: Server) -> None:
    tools = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in ("a", "b", "c")]
    choice = {"type": "allowed_tools", "tools": [{"type": "function", "name": "b"}], "mode": "required"}
    create_ok(server, {"model": "x:up", "input": "hi", "tools": tools, "tool_choice": choice})
    sent = last_request(upstream)["body"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["b"]
    assert sent["tool_choice"] == "required"


def test_hosted_tools_and_client_metadata_are_accepted_but_not_sent_upstream(server: Server, upstream: Server) -> None:
    # What Codex sends: hosted and namespaced tools a Chat Completions upstream cannot run, client_metadata.
    tools = [
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
        {"type": "web_search", "external_web_access": False},
        {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn_agent"}]},
    ]
    body = {"model": "x:up", "input": "hi", "tools": tools, "client_metadata": {"x-codex-turn-metadata": "{}" * 400}}
    response = create_ok(server, body)
    sent = last_request(upstream)["body"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["f"]
    assert "client_metadata" not in sent
    assert "client_metadata" not in response
    assert [t["type"] for t in response["tools"]] == ["function", "web_search", "namespace"]
    assert response["tools"][1] == tools[1]


def test_a_json_answer_to_a_stream_request(server: Server) -> None:
    model = "json:openai-gpt-4o-mini-text-usage:up"
    body = create_ok(server, {"model": model, "input": "hi"})
    text = body["output"][0]["content"][0]["text"]
    assert text == "The capital of the UK is London."
    _, response = stream(server, {"model": model, "input": "hi"})
    assert response["output"][0]["content"][0]["text"] == text
    assert response["usage"]["total_tokens"] == 7


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    text = response.text
    for leak in (SECRET, UPSTREAM_KEY, "127.0.0.1", "/chat/completions"):
        assert leak not in text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize(("code", "status"), [(500, 502), (503, 502), (400, 502), (401, 502), (404, 502)])
@pytest.mark.parametrize("streaming", [False, True])
def test_upstream_http_errors_before_the_first_byte(server: Server, code: int, status: int, streaming: bool) -> None:
    response = create(server, {"model": f"status:{code}:up", "input": "hi", "stream": streaming})
    error = _error(response, status)
    assert error["type"] == "model_error"
    assert f"HTTP {code}" in error["message"]


def test_upstream_error_after_keepalives_fails_the_stream(server: Server) -> None:
    raw = raw_stream(server, {"model": "status:503?delay=1:up", "input": "hi"})
    assert raw.startswith(b": ping\n\n")
    assert SECRET.encode() not in raw
    events, response = check_stream(raw)
    assert response["status"] == "failed"
    assert events[-2]["error"]["code"] == "upstream_error"
    assert "HTTP 503" in response["error"]["message"]


def test_upstream_429_passes_retry_after(server: Server) -> None:
    response = create(server, {"model": "status:429:up", "input": "hi"})
    error = _error(response, 429)
    assert error["type"] == "too_many_requests"
    assert response.headers["retry-after"] == "7"


def test_upstream_unreachable_is_502(server: Server) -> None:
    error = _error(create(server, {"model": "m:dead", "input": "hi"}), 502)
    assert error["code"] == "upstream_unreachable"


def test_unknown_provider_is_404(server: Server) -> None:
    error = _error(create(server, {"model": "gpt-4o:nowhere", "input": "hi"}), 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"


def test_first_event_timeout_before_the_first_byte_is_504(server: Server) -> None:
    began = time.monotonic()
    error = _error(create(server, {"model": "hang:slow", "input": "hi"}), 504)
    assert error["code"] == "upstream_timeout"
    assert 0.9 < time.monotonic() - began < 5


def test_first_event_timeout_after_keepalives_fails_the_stream(server: Server) -> None:
    raw = raw_stream(server, {"model": "stall:slow", "input": "hi"})
    assert b": ping\n\n" in raw
    events, response = check_stream(raw)
    assert response["status"] == "failed"
    assert events[-2]["type"] == "error"
    assert events[-2]["error"]["code"] == "upstream_timeout"
    assert response["error"]["code"] == "upstream_timeout"


def test_idle_timeout_mid_stream_fails_the_stream(server: Server) -> None:
    began = time.monotonic()
    events, response = stream(
        server, {"model": "fixture:openai-gpt-4o-mini-text-usage?stall_after=900:slow", "input": "hi"}
    )
    assert 0.9 < time.monotonic() - began < 5
    assert response["status"] == "failed"
    assert response["error"]["code"] == "upstream_timeout"
    assert any(e["type"] == "response.output_text.delta" for e in events)


def test_idle_timeout_non_streaming_is_504(server: Server) -> None:
    model = "fixture:openai-gpt-4o-mini-text-usage?stall_after=900:slow"
    assert _error(create(server, {"model": model, "input": "hi"}), 504)["code"] == "upstream_timeout"


def test_dropped_upstream_fails_the_stream(server: Server) -> None:
    events, response = stream(server, {"model": "fixture:openai-gpt-4o-mini-text-usage?drop=700:up", "input": "hi"})
    assert response["status"] == "failed"
    assert response["error"]["code"] == "upstream_stream_truncated"
    assert events[-2]["type"] == "error"


def test_dropped_upstream_non_streaming_is_502(server: Server) -> None:
    response = create(server, {"model": "fixture:openai-gpt-4o-mini-text-usage?drop=700:up", "input": "hi"})
    assert _error(response, 502)["code"] == "upstream_stream_truncated"


def test_keepalives_while_the_upstream_is_slow(server: Server) -> None:
    raw = raw_stream(server, {"model": "fixture:ollama-llama3.2-tool-call?drip=0.6:up", "input": "hi"})
    assert raw.count(b": ping\n\n") >= 1
    _, response = check_stream(raw)
    assert response["status"] == "completed"


@pytest.mark.parametrize(
    "model", ["fixture:ollama-llama3.2-tool-call?pings=8&drip=0.15:up", "claude?pings=8&drip=0.15:anth"]
)
def test_keepalives_while_the_upstream_sends_only_its_own(server: Server, model: str) -> None:
    """An upstream's pings (SSE comments, Anthropic's `ping` events) give the client nothing: to it the upstream is
    silent, so the router's keep-alives go out (every 0.4 s here) while they last (1.2 s)."""
    raw = raw_stream(server, {"model": model, "input": "hi"})
    first_event = raw.index(b"event: ")
    assert raw.count(b": ping\n\n", first_event) >= 2
    _, response = check_stream(raw)
    assert response["status"] == "completed"


def _wait_closed(upstream: Server, model: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        received = httpx.get(f"{upstream.url}/requests", timeout=5).json()
        if any(r["body"]["model"] == model and r["closed_early"] for r in received):
            return True
        time.sleep(0.1)
    return False


def test_client_disconnect_cancels_the_upstream_stream(server: Server, upstream: Server) -> None:
    model = "fixture:vllm-qwen3-reasoning-content-usage?drip=0.05&tag=disconnect-stream"
    body = {"model": f"{model}:up", "input": "hi", "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=30) as r:
        for _ in r.iter_raw():
            break
    assert _wait_closed(upstream, model)


def test_client_disconnect_cancels_a_waiting_non_streaming_request(server: Server, upstream: Server) -> None:
    model = "hang?tag=disconnect-wait"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/responses", json={"model": f"{model}:up", "input": "hi"}, timeout=0.5)
    assert _wait_closed(upstream, model)


def test_nothing_secret_in_the_logs(server: Server) -> None:
    log = server.log()
    assert UPSTREAM_KEY not in log
    assert SECRET not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("provider") == "up" and line["status"] == 200 for line in lines)


def test_metrics(server: Server) -> None:
    create_ok(server, {"model": "fixture:openai-gpt-4o-mini-text-usage:up", "input": "hi"})
    stream(server, {"model": "fixture:openai-gpt-4o-mini-text-usage:up", "input": "hi"})
    text = httpx.get(f"{server.url}/metrics").text
    assert 'ferroute_requests_total{provider="up",status="200",stream="false"}' in text
    assert 'ferroute_requests_total{provider="up",status="200",stream="true"}' in text
    assert "ferroute_streams_in_flight 0" in text
    assert 'ferroute_time_to_first_event_seconds_count{provider="up"}' in text
    assert 'ferroute_upstream_errors_total{provider="up",code="upstream_error"}' in text


# --- auth: a router of its own ------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(upstream: Server) -> Iterator[Server]:
    config = upstream_config(upstream.url, extra=f'api_keys = ["{ROUTER_KEY}", "sk-second"]')
    with router(config) as server:
        yield server


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {ROUTER_KEY}", "Bearer", f"Bearer {ROUTER_KEY}x"])
def test_auth_rejects_missing_or_wrong_keys(guarded: Server, upstream: Server, header: str | None) -> None:
    httpx.delete(f"{upstream.url}/requests")
    headers = {"authorization": header} if header else {}
    body = {"model": "x:up", "input": "hi"}
    response = httpx.post(f"{guarded.url}/v1/responses", json=body, headers=headers)
    error = _error(response, 401)
    assert error["type"] == "authentication_error"
    assert httpx.get(f"{upstream.url}/requests").json() == []  # nothing went upstream
    assert httpx.get(f"{guarded.url}/v1/models", headers=headers).status_code == 401


def test_auth_accepts_each_key(guarded: Server) -> None:
    for key in (ROUTER_KEY, "sk-second"):
        create_ok(guarded, {"model": "x:mock", "input": "hi"}, headers={"authorization": f"Bearer {key}"})
    assert httpx.get(f"{guarded.url}/healthz").status_code == 200
    assert ROUTER_KEY not in guarded.log()


def test_auth_comes_before_body_checks(guarded: Server) -> None:
    response = httpx.post(f"{guarded.url}/v1/responses", content=b"not json")
    assert response.status_code == 401


# --- graceful shutdown: a router of its own -----------------------------------------------------


def test_shutdown_ends_a_running_stream_with_response_failed(upstream: Server) -> None:
    config = upstream_config(upstream.url, extra="shutdown_grace = 0.5")
    body = {"model": "fixture:vllm-qwen3-reasoning-content-usage?drip=0.05:up", "input": "hi", "stream": True}
    with (
        router(config, env=ROUTER_ENV) as server,
        httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=30) as r,
    ):
        raw = bytearray()
        signalled = False
        for chunk in r.iter_raw():
            raw += chunk
            if not signalled and b"response.reasoning.delta" in raw:
                server.process.send_signal(signal.SIGTERM)
                signalled = True
        assert server.process.wait(timeout=20) == 0
    events, response = check_stream(bytes(raw))
    assert response["status"] == "failed"
    assert response["error"]["code"] == "shutting_down"
    assert any(e["type"] == "response.reasoning.delta" for e in events)


# --- the request mapping, without a server ------------------------------------------------------


def _chat(body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    request = parse_request(json.dumps({"model": "m", **body}).encode(), max_depth=64, max_input_items=100)
    return chat_request(request, "upstream-model", **kwargs)


def test_reasoning_text_and_tool_calls_of_one_turn_are_one_assistant_message() -> None:
    items = [
        {"role": "user", "content": "go"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "plan"}]},
        {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}", "status": "completed"},
        {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "a", "output": [{"type": "input_text", "text": "A"}]},
        {"type": "function_call_output", "call_id": "b", "output": "B"},
    ]
    messages = _chat({"input": items})["messages"]
    assert messages[1] == {
        "role": "assistant",
        "reasoning_content": "plan",
        "content": None,
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    }
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "a", "content": "A"},
        {"role": "tool", "tool_call_id": "b", "content": "B"},
    ]
    without = _chat({"input": items}, send_reasoning=False)["messages"][1]
    assert "reasoning_content" not in without


def test_provider_options_and_defaults() -> None:
    body = _chat({"input": "x", "max_output_tokens": 50, "text": {"format": {"type": "json_object"}}},
                 max_tokens_field="max_completion_tokens")  # fmt: skip
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    assert body["response_format"] == {"type": "json_object"}
    plain = _chat({"input": "x"})
    assert plain == {
        "model": "upstream-model",
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


@pytest.mark.parametrize(
    ("items", "param"),
    [
        (_user({"type": "input_video", "video_url": "https://v"}), "input[0].content[0].type"),
        (_user({"type": "input_file", "file_url": "https://f"}), "input[0].content[0].file_data"),
        (_user({"type": "input_image", "file_id": "file_1"}), "input[0].content[0].image_url"),
        ([{"role": "system", "content": [{"type": "input_image", "image_url": "https://i"}]}],
         "input[0].content[0].type"),
        ([{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": "u"}]}],
         "input[0].output[0].type"),
        ([{"type": "compaction", "encrypted_content": "x"}], "input[0].type"),
        ([], "input"),
    ],
)  # fmt: skip
def test_what_a_chat_completions_upstream_cannot_take_is_a_clear_400(items: list[Any], param: str) -> None:
    with pytest.raises(RouterError) as info:
        _chat({"input": items})
    assert info.value.status == 400
    assert info.value.param == param


def test_concurrent_streams_stay_separate(server: Server) -> None:
    names = [
        "vllm-qwen3-reasoning-content-usage",
        "openai-gpt-4o-parallel-tool-calls-usage",
        "ollama-llama3.2-tool-call",
    ]

    async def one(client: httpx.AsyncClient, name: str) -> tuple[str, bytes]:
        body = {"model": f"fixture:{name}?chunk=512:up", "input": "hi", "stream": True}
        async with client.stream("POST", f"{server.url}/v1/responses", json=body) as r:
            assert r.status_code == 200
            return name, await r.aread()

    async def run() -> list[tuple[str, bytes]]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(one(client, names[i % len(names)]) for i in range(24)))

    results = asyncio.run(run())
    ids = set()
    for name, raw in results:
        events, response = check_stream(raw)
        assert _comparable(events) == _comparable(_direct(name, f"fixture:{name}?chunk=512:up"))
        ids.add(response["id"])
    assert len(ids) == 24

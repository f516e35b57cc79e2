"""The Rust mock upstream (`ferroute._core.MockUpstream`, `ferroute mock-upstream`): every dialect's
stream parses as the real ones do, timings and error injection are honoured, connections are kept
alive, and `ferroute serve` routes through it end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import ferroute
from ferroute._core import MockUpstream
from tests.support.fixtures import FIXTURES
from tests.support.grammar import check_stream, validate_response
from tests.support.servers import REPO, create_ok, router, stream

CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream(tokens=6, reasoning_tokens=3, tool_call=True) as server:
        yield server


def post(server: MockUpstream, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=10, **kwargs)


def test_chat_completions_stream_translates_to_a_valid_open_responses_stream(mock: MockUpstream) -> None:
    raw = post(mock, "/v1/chat/completions", {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}})
    assert raw.headers["content-type"] == "text/event-stream"
    frames = [f for f in raw.content.split(b"\n\n") if f]
    assert frames[-1] == b"data: [DONE]"
    first, *_, finish, usage = [json.loads(f[6:]) for f in frames[:-1]]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6 + 3 + 8
    translator = ferroute.ChatCompletionsTranslator({"model": "m"})
    events, response = check_stream(translator.feed(raw.content) + translator.finish())
    reasoning, message, call = response["output"]
    assert reasoning["type"] == "reasoning"
    assert message["content"][0]["text"] == " The capital of the UK is"
    assert json.loads(call["arguments"]) == {"city": "London", "unit": "c"}
    assert sum(e["type"] == "response.function_call_arguments.delta" for e in events) == 7
    assert len(frames) == mock.events_per_stream("chat_completions")


def test_chat_completions_without_usage_has_no_usage_chunk(mock: MockUpstream) -> None:
    raw = post(mock, "/v1/chat/completions", {**CHAT_BODY, "stream": True}).content
    assert b'"usage"' not in raw
    assert raw.endswith(b"data: [DONE]\n\n")


def test_responses_stream_passes_the_event_parser(mock: MockUpstream) -> None:
    raw = post(mock, "/v1/responses", {"model": "m", "input": "hi", "stream": True}).content
    parser = ferroute.ResponseEventParser()
    events = parser.feed(raw)
    parser.close()
    assert len(events) == mock.events_per_stream("responses")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    response = parser.response
    assert response is not None and response["status"] == "completed"
    assert [item["type"] for item in response["output"]] == ["reasoning", "message", "function_call"]
    # The event names are ones OpenAI's recorded streams use.
    recorded = set()
    for path in (FIXTURES / "responses").glob("openai-*.sse"):
        recorded |= {line[7:] for line in path.read_text().splitlines() if line.startswith("event: ")}
    assert {e["type"] for e in events} <= recorded


def test_anthropic_stream_is_shaped_like_the_recorded_ones(mock: MockUpstream) -> None:
    raw = post(mock, "/v1/messages", {**CHAT_BODY, "max_tokens": 10, "stream": True}).content
    decoder = ferroute.SSEDecoder()
    events = decoder.feed(raw) + decoder.close()
    assert all(e.event == json.loads(e.data)["type"] for e in events)
    names = [e.event for e in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    recorded = set()
    for path in (FIXTURES / "anthropic").glob("claude-*.sse"):
        recorded |= {line[7:] for line in path.read_text().splitlines() if line.startswith("event: ")}
    assert set(names) <= recorded
    deltas = [json.loads(e.data)["delta"] for e in events if e.event == "content_block_delta"]
    assert "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta") == (
        '{"city":"London","unit":"c"}'
    )
    starts = [json.loads(e.data)["content_block"]["type"] for e in events if e.event == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    assert names.count("content_block_stop") == 3
    assert json.loads(events[-2].data)["delta"]["stop_reason"] == "tool_use"


def test_non_streaming_bodies(mock: MockUpstream) -> None:
    chat = post(mock, "/v1/chat/completions", CHAT_BODY)
    assert chat.json()["object"] == "chat.completion"
    validate_response(json.loads(ferroute.ChatCompletionsTranslator({"model": "m"}).convert(chat.content)))
    assert post(mock, "/v1/messages", CHAT_BODY).json()["type"] == "message"
    response = post(mock, "/v1/responses", {"model": "m", "input": "hi"}).json()
    assert response["object"] == "response" and len(response["output"]) == 3
    assert post(mock, "/v1/nothing", {}).status_code == 404
    assert httpx.post(f"{mock.url}/v1/responses", content=b"not json", timeout=5).status_code == 400


def test_keep_alive_reuses_one_connection() -> None:
    with MockUpstream(tokens=3) as server, httpx.Client(timeout=5) as client:
        for i in range(20):
            body = {"model": "m", "input": "hi", "stream": i % 2 == 0}
            assert client.post(f"{server.url}/v1/responses", json=body).status_code == 200
        stats = server.stats()
    assert stats["connections"] == 1
    assert stats["requests"] == 20
    assert stats["streams"] == 10
    assert stats["events"] == 10 * server.events_per_stream("responses")
    assert stats["cpu_s"] > 0


def test_close_delimited_streams() -> None:
    with MockUpstream(tokens=3, chunked=False) as server:
        response = post(server, "/v1/chat/completions", {**CHAT_BODY, "stream": True})
    assert "transfer-encoding" not in response.headers
    assert response.headers["connection"] == "close"
    assert response.content.endswith(b"data: [DONE]\n\n")


def test_time_to_first_token_and_gaps_are_honoured() -> None:
    with MockUpstream(ttft_ms=80, gap_ms=15, tokens=6) as server:
        start = time.perf_counter()
        arrivals: list[tuple[float, bytes]] = []
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**CHAT_BODY, "stream": True}) as r:
            arrivals.extend((time.perf_counter() - start, chunk) for chunk in r.iter_raw())
    first = next(t for t, chunk in arrivals if b'"content"' in chunk)
    total = arrivals[-1][0]
    assert 0.075 <= first < 0.3
    # 5 gaps of 15 ms after the first token.
    assert 0.075 + 5 * 0.015 <= total < 0.5


def test_random_gaps_stay_in_range() -> None:
    with MockUpstream(gap_ms=2, gap_max_ms=6, tokens=21, seed=7) as server:
        start = time.perf_counter()
        post(server, "/v1/responses", {"model": "m", "input": "hi", "stream": True})
        elapsed = time.perf_counter() - start
    assert 20 * 0.002 <= elapsed < 20 * 0.006 + 0.2


def test_status_errors_at_the_rate_asked() -> None:
    with MockUpstream(tokens=2, error_rate=0.3, error_kind="status:503", seed=42) as server, httpx.Client() as client:
        codes = [client.post(f"{server.url}/v1/chat/completions", json=CHAT_BODY).status_code for _ in range(300)]
        failed = client.post(f"{server.url}/v1/chat/completions", json=CHAT_BODY)
        while failed.status_code != 503:
            failed = client.post(f"{server.url}/v1/chat/completions", json=CHAT_BODY)
        injected = server.stats()["errors_injected"]
    assert set(codes) == {200, 503}
    assert 60 <= codes.count(503) <= 120  # 90 expected; binomial sd ≈ 8
    assert injected >= codes.count(503)
    assert failed.json()["error"]["message"].startswith("injected error (HTTP 503)")


def test_anthropic_errors_have_anthropic_shape() -> None:
    with MockUpstream(error_rate=1.0, error_kind="status:529") as server:
        response = post(server, "/v1/messages", {**CHAT_BODY, "stream": True})
    assert response.status_code == 529
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "overloaded_error"


def read_until_error(url: str, body: dict[str, Any], error: type[Exception], timeout: float = 10) -> bytes:
    """The bytes of a streamed response that must end in `error`."""
    raw = bytearray()
    try:
        with httpx.stream("POST", url, json=body, timeout=timeout) as r:
            for chunk in r.iter_raw():
                raw += chunk
    except error:
        return bytes(raw)
    raise AssertionError(f"the stream ended without {error.__name__}")


def test_drop_mid_stream() -> None:
    with MockUpstream(tokens=10, error_rate=1.0, error_kind="drop") as server:
        raw = read_until_error(
            f"{server.url}/v1/chat/completions", {**CHAT_BODY, "stream": True}, httpx.RemoteProtocolError
        )
    assert b'"content"' in raw and b"[DONE]" not in raw
    translator = ferroute.ChatCompletionsTranslator({"model": "m"})
    _, response = check_stream(translator.feed(raw) + translator.finish())
    assert response["status"] == "failed"


def test_stall_mid_stream_and_stop_ends_it() -> None:
    server = MockUpstream(tokens=10, error_rate=1.0, error_kind="stall")
    try:
        body = {"model": "m", "input": "hi", "stream": True}
        raw = read_until_error(f"{server.url}/v1/responses", body, httpx.ReadTimeout, timeout=0.5)
        assert b"response.created" in raw and b"response.completed" not in raw
    finally:
        started = time.perf_counter()
        server.stop()
    assert time.perf_counter() - started < 2
    assert server.stopped
    assert server.stats()["errors_injected"] == 1


def test_bad_settings_are_value_errors() -> None:
    with pytest.raises(ValueError, match="error kind"):
        MockUpstream(error_kind="explode")
    with pytest.raises(ValueError, match="between 0 and 1"):
        MockUpstream(error_rate=2)
    with pytest.raises(ValueError, match="minimum exceeds"):
        MockUpstream(gap_ms=5, gap_max_ms=1)
    with pytest.raises(ValueError, match="empty"):
        MockUpstream(tokens=0)


def test_ferroute_serve_routes_through_the_mock_upstream() -> None:
    with MockUpstream(tokens=8, reasoning_tokens=4, gap_ms=1) as upstream:
        config = f'[[providers]]\nname = "up"\nkind = "chat_completions"\nbase_url = "{upstream.url}/v1"\n'
        with router(config) as server:
            _, response = stream(server, {"model": "ferroute-mock:up", "input": "hi"})
            assert response["status"] == "completed"
            assert [item["type"] for item in response["output"]] == ["reasoning", "message"]
            assert response["output"][1]["content"][0]["text"] == " The capital of the UK is London,"
            whole = create_ok(server, {"model": "ferroute-mock:up", "input": "hi"})
            assert whole["output"][1]["content"][0]["text"] == response["output"][1]["content"][0]["text"]
        assert upstream.stats()["requests"] == 2


def test_cli_prints_its_port_and_a_summary() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ferroute.loadtest.cli", "mock-upstream", "--port", "0", "--gap-ms", "0-1",
         "--tokens", "4"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        response = httpx.post(f"http://127.0.0.1:{port}/v1/responses", json={"model": "m", "stream": True}, timeout=5)
        assert b"response.completed" in response.content
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "1 streams" in stderr and "CPU" in stderr


def test_cli_rejects_a_bad_gap() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferroute.loadtest.cli", "mock-upstream", "--gap-ms", "5-1"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "expected 0 <= A <= B" in result.stderr

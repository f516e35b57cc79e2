"""AnthropicTranslator: recorded Anthropic Messages streams in, Open Responses SSE out.

Every output is checked with tests/support/grammar.py (the spec's grammar + openresponses-types) and compared with an
independent reference: the Messages events accumulated block by block the plain way in Python.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import ferroute
from tests.support.fixtures import FIXTURES, fixture_files
from tests.support.grammar import check_stream
from tests.support.summaries import anthropic_summary as summarise

ANTHROPIC = fixture_files("anthropic")
RESPONSE_ID = "resp_" + "0" * 48
STRIP_TIME = re.compile(rb'"completed_at":\d+')


def translate(raw: bytes, chunk: int | None = None, **kwargs: Any) -> bytes:
    t = ferroute.AnthropicTranslator(**kwargs)
    pieces = [raw] if chunk is None else [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    return b"".join(t.feed(piece) for piece in pieces) + t.finish()


def sse(*events: dict[str, Any]) -> bytes:
    """A Messages stream of these events, framed as Anthropic frames them."""
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": body}


def reference(raw: bytes) -> dict[str, Any]:
    """What the stream says, read the simple way: the translated blocks in order, the stop reason, usage, error."""
    blocks: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    stop_reason = None
    usage: dict[str, int] = {}
    error = None
    for frame in raw.decode().split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in frame.splitlines() if line.startswith("data:"))
        if not data:
            continue
        event = json.loads(data)
        kind = event["type"]
        if kind == "message_start":
            usage.update({k: v for k, v in event["message"].get("usage", {}).items() if isinstance(v, int)})
        elif kind == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"], partial="")
            order.append(event["index"])
        elif kind == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] += delta["signature"]
            elif delta["type"] == "input_json_delta":
                block["partial"] += delta["partial_json"]
        elif kind == "message_delta":
            stop_reason = event["delta"].get("stop_reason") or stop_reason
            usage.update({k: v for k, v in (event.get("usage") or {}).items() if isinstance(v, int)})
        elif kind == "error":
            error = event["error"]
    return {"blocks": [blocks[i] for i in order], "stop": stop_reason, "usage": usage, "error": error}


def expected_output(blocks: list[dict[str, Any]]) -> list[Any]:
    """The output items the blocks become: text blocks in a row share one message; other kinds (server tools)
    vanish but part the text around them."""
    items: list[Any] = []
    previous = None
    for block in blocks:
        kind = block["type"]
        if kind == "text":
            if items and items[-1][0] == "message" and previous == "text":
                items[-1] = ("message", items[-1][1] + block["text"])
            elif block["text"]:
                items.append(("message", block["text"]))
        elif kind == "thinking":
            items.append(("reasoning", block["thinking"], block["signature"]))
        elif kind == "redacted_thinking":
            items.append(("reasoning", "", block["data"]))
        elif kind == "tool_use":
            arguments = json.loads(block["partial"]) if block["partial"] else {}
            items.append(("function_call", block["id"], block["name"], arguments))
        previous = kind
    return items


@pytest.mark.parametrize("path", ANTHROPIC, ids=lambda p: p.stem)
def test_recorded_streams_follow_the_grammar_and_the_reference(path: Path) -> None:
    raw = path.read_bytes()
    events, response = check_stream(translate(raw, response_id=RESPONSE_ID, created_at=1))
    ref = reference(raw)
    if ref["error"] is not None:
        assert response["status"] == "failed"
        assert response["error"]["code"] == ref["error"]["type"]
        assert response["error"]["message"] == f"upstream error: {ref['error']['message']}"
        assert events[-2]["type"] == "error"
        return
    assert summarise(response["output"]) == expected_output(ref["blocks"])
    status = {"max_tokens": "incomplete", "refusal": "incomplete"}.get(ref["stop"], "completed")
    assert response["status"] == status
    usage = ref["usage"]
    cached = usage.get("cache_read_input_tokens", 0)
    prompt = usage["input_tokens"] + cached + usage.get("cache_creation_input_tokens", 0)
    assert response["usage"]["input_tokens"] == prompt
    assert response["usage"]["output_tokens"] == usage["output_tokens"]
    assert response["usage"]["total_tokens"] == prompt + usage["output_tokens"]
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == cached


@pytest.mark.parametrize("path", ANTHROPIC, ids=lambda p: p.stem)
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_any_chunking_and_crlf_give_the_same_stream(path: Path, chunk: int) -> None:
    raw = path.read_bytes()
    whole = translate(raw, response_id=RESPONSE_ID, created_at=1)
    split = translate(raw, chunk, response_id=RESPONSE_ID, created_at=1)
    crlf = translate(
        b": keep-alive\r\n\r\n" + raw.replace(b"\n", b"\r\n"), chunk, response_id=RESPONSE_ID, created_at=1
    )
    assert STRIP_TIME.sub(b"", split) == STRIP_TIME.sub(b"", whole)
    assert STRIP_TIME.sub(b"", crlf) == STRIP_TIME.sub(b"", whole)


@pytest.mark.parametrize("path", ANTHROPIC, ids=lambda p: p.stem)
def test_a_stream_cut_anywhere_ends_cleanly(path: Path) -> None:
    raw = path.read_bytes()
    for cut in range(1, len(raw), max(1, len(raw) // 13)):
        _, response = check_stream(translate(raw[:cut]))
        if response["status"] == "failed":
            assert response["error"]["code"] in {"upstream_stream_truncated", "overloaded_error"}


def test_signatures_round_trip_and_thinking_items_stay_apart() -> None:
    raw = (FIXTURES / "anthropic/claude-sonnet-4-thinking-tool-use.sse").read_bytes()
    _, response = check_stream(translate(raw))
    reasoning, call = response["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"][0]["text"]
    assert reasoning["encrypted_content"] == reference(raw)["blocks"][0]["signature"]
    assert call["type"] == "function_call" and call["status"] == "completed"
    two = sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 1}}},
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, {"type": "thinking_delta", "thinking": "a"}),
        delta(0, {"type": "signature_delta", "signature": "S1"}),
        {"type": "content_block_stop", "index": 0},
        block_start(1, {"type": "redacted_thinking", "data": "R2"}),
        {"type": "content_block_stop", "index": 1},
        block_start(2, {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}),
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    )
    _, response = check_stream(translate(two))
    assert summarise(response["output"]) == [
        ("reasoning", "a", "S1"),
        ("reasoning", "", "R2"),
        ("function_call", "toolu_1", "now", {}),
    ]


def test_unknown_events_and_blocks_are_skipped_and_malformed_ones_fail() -> None:
    raw = sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 1}}},
        {"type": "some_future_event", "x": 1},
        block_start(0, {"type": "web_search_tool_result", "content": []}),
        delta(0, {"type": "some_future_delta"}),
        {"type": "content_block_stop", "index": 0},
        block_start(1, {"type": "text", "text": "Hi"}),
        delta(1, {"type": "citations_delta", "citation": {}}),
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
    )
    _, response = check_stream(translate(raw))  # (no message_stop: a stop_reason on an event boundary is enough)
    assert response["status"] == "completed"
    assert summarise(response["output"]) == [("message", "Hi")]
    _, response = check_stream(translate(b'data: {"type":"content_block_delta","delta":{"type":"text_delta"}}\n\n'))
    assert response["error"]["code"] == "upstream_malformed_stream"
    assert response["error"]["message"].startswith("the upstream sent a malformed event: missing field `text`")


def test_a_whole_message_converts() -> None:
    t = ferroute.AnthropicTranslator({"model": "claude:anthropic", "input": "hi"}, created_at=1)
    body = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Hm.", "signature": "sig"},
            {"type": "text", "text": "Sunny."},
            {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    response = json.loads(t.convert(json.dumps(body).encode()))
    assert response["id"] == t.response_id and response["model"] == "claude:anthropic"
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert summarise(response["output"]) == [
        ("reasoning", "Hm.", "sig"),
        ("message", "Sunny."),
        ("function_call", "toolu_9", "get_weather", {"city": "Paris"}),
    ]
    failed = json.loads(t.convert(b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'))
    assert failed["status"] == "failed" and failed["error"]["code"] == "rate_limit_error"
    with pytest.raises(ferroute.UpstreamError):
        t.convert(b'{"choices": []}')
    assert repr(t).startswith("AnthropicTranslator(response_id=")

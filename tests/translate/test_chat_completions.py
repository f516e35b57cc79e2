"""ChatCompletionsTranslator: recorded provider streams in, Open Responses SSE out.

Every output is checked with tests/support/grammar.py (the spec's grammar + openresponses-types) and compared with an
independent reference: the chat chunks accumulated the plain way in Python.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import ferroute
from tests.support.fixtures import FIXTURES, fixture_files
from tests.support.grammar import check_stream, split_sse

CHAT = fixture_files("chat_completions")


def translate(raw: bytes, chunk: int | None = None, **kwargs: Any) -> bytes:
    t = ferroute.ChatCompletionsTranslator(**kwargs)
    pieces = [raw] if chunk is None else [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
    return b"".join(t.feed(piece) for piece in pieces) + t.finish()


def upstream_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event, data) of each SSE event, the simple way: enough for these fixtures."""
    text = raw.decode().replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for block in text.split("\n\n"):
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            out.append((event, "\n".join(data)))
    return out


def reference(raw: bytes) -> dict[str, Any]:
    """What a stream should become: segments of (kind, text) in arrival order, finish reason, usage, error."""
    segments: list[list[Any]] = []
    calls: dict[int, list[Any]] = {}
    finish = usage = error = None
    for event, data in upstream_events(raw):
        if data.strip() == "[DONE]":
            break
        chunk = json.loads(data)
        if event == "error" or chunk.get("error"):
            error = chunk["error"]
            break
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            pieces = [
                ("reasoning", delta.get("reasoning_content") or delta.get("reasoning")),
                ("message", delta.get("content")),
                ("refusal", delta.get("refusal")),
            ]
            for kind, text in pieces:
                if text:
                    kind_key = "message" if kind == "refusal" else kind
                    if segments and segments[-1][0] == kind_key and kind_key != "call":
                        segments[-1][1].append((kind, text))
                    else:
                        segments.append([kind_key, [(kind, text)]])
            for tc in delta.get("tool_calls") or []:
                index = tc["index"]
                fn = tc.get("function") or {}
                if index not in calls:
                    calls[index] = ["call", fn.get("name") or "", fn.get("arguments") or "", tc.get("id")]
                    segments.append(calls[index])
                else:
                    calls[index][2] += fn.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return {"segments": segments, "finish": finish, "usage": usage, "error": error}


def summarise(output: list[dict[str, Any]]) -> list[Any]:
    """The output items in the reference's shape."""
    out: list[Any] = []
    for item in output:
        if item["type"] == "function_call":
            out.append(["call", item["name"], item["arguments"], item["call_id"]])
        elif item["type"] == "reasoning":
            out.append(["reasoning", [("reasoning", item["content"][0]["text"])]])
        else:
            parts = [
                ("refusal", p["refusal"]) if p["type"] == "refusal" else ("message", p["text"]) for p in item["content"]
            ]
            out.append(["message", parts])
    return out


def merge_runs(segments: list[Any]) -> list[Any]:
    """Join consecutive pieces of the same kind inside a segment (parts are whole texts)."""
    merged: list[Any] = []
    for seg in segments:
        if seg[0] == "call":
            merged.append(seg)
            continue
        parts: list[tuple[str, str]] = []
        for kind, text in seg[1]:
            if parts and parts[-1][0] == kind:
                parts[-1] = (kind, parts[-1][1] + text)
            else:
                parts.append((kind, text))
        merged.append([seg[0], parts])
    return merged


def normalise_ids(raw: bytes) -> bytes:
    """Item ids are random per run (made from the response id); number them by first appearance so two runs
    compare."""
    seen: dict[bytes, bytes] = {}
    pattern = rb"(?:msg|rs|fc)_[0-9a-f]{48}(?:[0-9a-f]{4})?"
    return re.sub(pattern, lambda m: seen.setdefault(m[0], b"item%d" % len(seen)), raw)


@pytest.mark.parametrize("path", CHAT, ids=lambda p: p.stem)
def test_recorded_streams_follow_the_grammar_and_the_reference(path: Path) -> None:
    raw = path.read_bytes()
    out = translate(raw, response_id="resp_" + "0" * 48, created_at=1)
    events, response = check_stream(out)
    ref = reference(raw)
    if ref["error"] is not None:
        assert response["status"] == "failed"
        message = ref["error"]["message"] if isinstance(ref["error"], dict) else str(ref["error"])
        assert response["error"]["message"] == f"upstream error: {message}"
        assert events[-2]["type"] == "error"
        # Whatever streamed before the error is kept, marked incomplete if it was still open.
        assert summarise(response["output"]) == merge_runs(ref["segments"])[: len(response["output"])]
        return
    assert summarise(response["output"]) == merge_runs(ref["segments"])
    expected_status = {"length": "incomplete", "content_filter": "incomplete"}.get(ref["finish"], "completed")
    assert response["status"] == expected_status
    if ref["usage"]:
        usage = ref["usage"]
        assert response["usage"]["input_tokens"] == usage["prompt_tokens"]
        assert response["usage"]["output_tokens"] == usage["completion_tokens"]
        assert response["usage"]["total_tokens"] == usage["total_tokens"]
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        assert response["usage"]["output_tokens_details"]["reasoning_tokens"] == reasoning
    else:
        assert response["usage"] is None
    for item in response["output"]:
        if item["type"] == "function_call":
            json.loads(item["arguments"])  # whole arguments, fragments joined in order
            assert item["call_id"]


@pytest.mark.parametrize("path", CHAT, ids=lambda p: p.stem)
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_any_chunking_gives_the_same_stream(path: Path, chunk: int) -> None:
    raw = path.read_bytes()
    whole = translate(raw, response_id="resp_x", created_at=1)
    split = translate(raw, chunk, response_id="resp_x", created_at=1)
    strip_time = re.compile(rb'"completed_at":\d+')
    assert strip_time.sub(b"", normalise_ids(split)) == strip_time.sub(b"", normalise_ids(whole))


@pytest.mark.parametrize("path", CHAT, ids=lambda p: p.stem)
def test_crlf_and_comments_from_the_upstream(path: Path) -> None:
    raw = path.read_bytes()
    crlf = b": keep-alive\r\n\r\n" + raw.replace(b"\n", b"\r\n")
    strip_time = re.compile(rb'"completed_at":\d+')
    expected = strip_time.sub(b"", normalise_ids(translate(raw, response_id="resp_x", created_at=1)))
    assert strip_time.sub(b"", normalise_ids(translate(crlf, 5, response_id="resp_x", created_at=1))) == expected


def test_vllm_reasoning_content_is_not_doubled() -> None:
    raw = (FIXTURES / "chat_completions/vllm-qwen3-reasoning-content-usage.sse").read_bytes()
    _, response = check_stream(translate(raw))
    reasoning, message = response["output"]
    assert reasoning["type"] == "reasoning" and message["type"] == "message"
    assert reasoning["content"][0]["text"].startswith("\nOkay,")
    assert "OkayOkay" not in reasoning["content"][0]["text"]
    assert response["usage"]["input_tokens"] > 0


def test_deepseek_cache_hits_become_cached_tokens() -> None:
    raw = (FIXTURES / "chat_completions/deepseek-reasoner-reasoning-content.sse").read_bytes()
    ref = reference(raw)["usage"]
    _, response = check_stream(translate(raw))
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == ref["prompt_cache_hit_tokens"]


def test_parallel_tool_calls() -> None:
    raw = (FIXTURES / "chat_completions/openai-gpt-4o-parallel-tool-calls-usage.sse").read_bytes()
    events, response = check_stream(translate(raw))
    calls = [item for item in response["output"] if item["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["add", "multiply"]
    assert all(isinstance(json.loads(c["arguments"]), dict) for c in calls)
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert len(deltas) > 2  # streamed as they came, not only at the end


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    body.update(extra)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("finish", "status", "reason"),
    [
        ("stop", "completed", None),
        ("tool_calls", "completed", None),
        ("length", "incomplete", "max_output_tokens"),
        ("content_filter", "incomplete", "content_filter"),
    ],
)
def test_every_finish_reason(finish: str, status: str, reason: str | None) -> None:
    raw = chunk({"role": "assistant", "content": "Hi"}) + chunk({}, finish) + DONE
    events, response = check_stream(translate(raw))
    assert response["status"] == status
    assert events[-1]["type"] == f"response.{status}"
    assert response["incomplete_details"] == ({"reason": reason} if reason else None)
    assert response["output"][0]["status"] == ("completed" if status == "completed" else "incomplete")
    assert (response["completed_at"] is not None) == (status == "completed")


def test_refusal_part() -> None:
    raw = chunk({"refusal": "I can't "}) + chunk({"refusal": "help."}) + chunk({}, "stop") + DONE
    events, response = check_stream(translate(raw))
    assert response["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help."}]
    assert [e["type"] for e in events].count("response.refusal.delta") == 2


def test_usage_chunk_after_finish() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    raw = chunk({"content": "x"}) + chunk({}, "stop") + b"data: " + json.dumps({"choices": [], "usage": usage}).encode()
    raw += b"\n\n" + DONE
    _, response = check_stream(translate(raw))
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }


@pytest.mark.parametrize("path", CHAT, ids=lambda p: p.stem)
def test_mid_stream_drop_fails_cleanly(path: Path) -> None:
    raw = path.read_bytes()
    frames = raw.split(b"\n\n")
    # Cut in the middle of the third data frame: the stream ended mid-event.
    cut = len(b"\n\n".join(frames[:3])) - 10
    events, response = check_stream(translate(raw[:cut]))
    assert response["status"] == "failed"
    assert events[-2]["type"] == "error"
    assert events[-2]["error"]["code"] == "upstream_stream_truncated"
    assert response["error"]["code"] == "upstream_stream_truncated"


def test_stream_without_done_after_finish_reason_completes() -> None:
    raw = chunk({"content": "Hi"}) + chunk({}, "stop")
    _, response = check_stream(translate(raw))
    assert response["status"] == "completed"


def test_stream_without_done_or_finish_reason_fails() -> None:
    _, response = check_stream(translate(chunk({"content": "Hi"})))
    assert response["status"] == "failed"
    assert "ended before the response was complete" in response["error"]["message"]


def test_upstream_error_payload_never_echoes_the_raw_body() -> None:
    body = {"error": {"message": "rate limited", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}
    raw = chunk({"content": "a"}) + b"data: " + json.dumps({**body, "secret": "sk-upstream"}).encode() + b"\n\n"
    out = translate(raw)
    assert b"sk-upstream" not in out
    events, response = check_stream(out)
    assert events[-2]["error"] == {
        "type": "rate_limit_error",
        "code": "rate_limit_exceeded",
        "message": "upstream error: rate limited",
        "param": None,
    }
    assert response["error"] == {"code": "rate_limit_exceeded", "message": "upstream error: rate limited"}
    assert response["output"][0]["status"] == "incomplete"


def test_malformed_chunk_fails() -> None:
    _, response = check_stream(translate(chunk({"content": "a"}) + b"data: {not json\n\n" + DONE))
    assert response["status"] == "failed"
    assert response["error"]["code"] == "upstream_malformed_stream"


def test_interleaved_tool_calls_fail_rather_than_break_the_grammar() -> None:
    def call(index: int, args: str, name: str | None = None) -> dict[str, Any]:
        tc: dict[str, Any] = {"index": index, "function": {"arguments": args}}
        if name:
            tc["id"], tc["function"]["name"] = f"call_{index}", name
        return {"tool_calls": [tc]}

    raw = chunk(call(0, '{"a":', "f")) + chunk(call(1, "{}", "g")) + chunk(call(0, "1}")) + chunk({}, "tool_calls")
    _, response = check_stream(translate(raw + DONE))
    assert response["status"] == "failed"
    assert "interleaved" in response["error"]["message"]


def test_tool_call_without_index_or_name_first() -> None:
    raw = chunk({"tool_calls": [{"id": "c1", "function": {"arguments": '{"x"'}}]})
    raw += chunk({"tool_calls": [{"function": {"name": "f", "arguments": ": 1}"}}]})
    raw += chunk({"tool_calls": [{"id": "c2", "function": {"name": "g", "arguments": "{}"}}]})
    _, response = check_stream(translate(raw + chunk({}, "tool_calls") + DONE))
    assert [(c["call_id"], c["name"], c["arguments"]) for c in response["output"]] == [
        ("c1", "f", '{"x": 1}'),
        ("c2", "g", "{}"),
    ]


def test_text_after_tool_call_opens_a_new_message() -> None:
    tc = {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}
    raw = chunk({"content": "Let me check."}) + chunk(tc) + chunk({"content": "Done."}) + chunk({}, "stop") + DONE
    _, response = check_stream(translate(raw))
    assert [i["type"] for i in response["output"]] == ["message", "function_call", "message"]


def test_request_settings_are_echoed() -> None:
    request = {
        "model": "Qwen/Qwen3-8B:vllm",
        "input": "hi",
        "instructions": "Be brief.",
        "temperature": 0.3,
        "tools": [{"type": "function", "name": "f", "description": None, "parameters": {}, "strict": None}],
        "tool_choice": "required",
        "metadata": {"a": "b"},
        "previous_response_id": "resp_prev",
        "max_output_tokens": 100,
    }
    for form in (request, json.dumps(request), json.dumps(request).encode()):
        _, response = check_stream(translate(chunk({"content": "x"}, "stop") + DONE, request=form))
        for key in ("model", "instructions", "temperature", "tools", "tool_choice", "metadata", "max_output_tokens"):
            assert response[key] == request[key], key
        assert response["previous_response_id"] == "resp_prev"
    _, response = check_stream(translate(chunk({"content": "x"}, "stop") + DONE, request=request, model="other"))
    assert response["model"] == "other"
    assert response["store"] is True  # the default when the request is silent
    _, response = check_stream(translate(chunk({"content": "x"}, "stop") + DONE, request=request, store=False))
    assert response["store"] is False


def test_bad_request_argument() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        ferroute.ChatCompletionsTranslator(b"[1, 2]")
    with pytest.raises(TypeError):
        ferroute.ChatCompletionsTranslator(42)  # type: ignore[arg-type]


def test_properties_and_response_json() -> None:
    t = ferroute.ChatCompletionsTranslator(response_id="resp_abc", created_at=5)
    assert t.response_id == "resp_abc"
    assert t.status == "in_progress"
    first = t.feed(chunk({"content": "Hi"}))
    assert split_sse(first)[0][0]["type"] == "response.created"
    t.feed(chunk({}, "stop") + DONE)
    assert t.status == "completed"
    assert t.finish() == b""
    assert t.feed(chunk({"content": "late"})) == b""
    response = json.loads(t.response_json())
    assert response["id"] == "resp_abc" and response["created_at"] == 5
    assert response["output"][0]["content"][0]["text"] == "Hi"


def test_ids_are_unguessable() -> None:
    ids = {ferroute.ChatCompletionsTranslator().response_id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"resp_[0-9a-f]{48}", i) for i in ids)


def test_convert_whole_body() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "It is sunny.",
                    "reasoning_content": "The user asks about weather.",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"c":"P"}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    t = ferroute.ChatCompletionsTranslator({"model": "m", "input": "x"}, response_id="resp_c", created_at=9)
    response = json.loads(t.convert(json.dumps(body).encode()))
    from tests.support.grammar import validate_response

    validate_response(response)
    assert response["id"] == "resp_c" and response["status"] == "completed" and response["model"] == "m"
    assert [i["type"] for i in response["output"]] == ["reasoning", "message", "function_call"]
    assert response["output"][1]["content"][0]["text"] == "It is sunny."
    assert response["output"][2]["arguments"] == '{"c":"P"}'
    assert response["usage"]["total_tokens"] == 7
    body["choices"][0]["finish_reason"] = "length"
    assert json.loads(t.convert(json.dumps(body).encode()))["status"] == "incomplete"


def test_convert_rejects_what_is_not_a_chat_completion() -> None:
    t = ferroute.ChatCompletionsTranslator()
    with pytest.raises(ferroute.UpstreamError, match=r"not a chat\.completion"):
        t.convert(b"<html>")
    with pytest.raises(ferroute.UpstreamError, match="no choices"):
        t.convert(b'{"choices": []}')
    failed = json.loads(t.convert(b'{"error": {"message": "overloaded"}}'))
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "upstream error: overloaded"


def test_a_rust_panic_is_an_exception_not_an_abort() -> None:
    with pytest.raises(BaseException, match="boom") as info:
        ferroute._core._panic("boom")
    assert type(info.value).__name__ == "PanicException"
    # The interpreter and the module carry on.
    assert check_stream(translate(chunk({"content": "ok"}, "stop") + DONE))[1]["status"] == "completed"


@pytest.mark.parametrize("path", CHAT, ids=lambda p: p.stem)
@pytest.mark.parametrize("read", [None, 1, 4096], ids=["whole", "1B", "4KiB"])
def test_event_parser_rebuilds_exactly_the_terminal_response(path: Path, read: int | None) -> None:
    out = translate(path.read_bytes(), response_id="resp_rt", created_at=1)
    parser = ferroute.ResponseEventParser()
    pieces = [out] if read is None else [out[i : i + read] for i in range(0, len(out), read)]
    events = [event for piece in pieces for event in parser.feed(piece)]
    parser.close()
    expected, _ = split_sse(out)
    assert events == expected
    assert parser.response == expected[-1]["response"]
    # Before the terminal event, the parser's accumulated output already equals the final one.
    partial = ferroute.ResponseEventParser()
    terminal = out.rindex(b"event: response.")
    partial.feed(out[:terminal])
    assert partial.response is not None
    assert partial.response["output"] == expected[-1]["response"]["output"]
    with pytest.raises(ferroute.StreamError):
        partial.close()

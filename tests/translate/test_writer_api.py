"""The translators' writer API (issue #16): reasoning policy, cancel and queued, several upstream calls in one
response, the router's own items, JSON-lines framing, whole bodies, ids.

Where the writer takes over something Python does today (`app.py`'s `_reasoning_frames`, `_cancelled`,
`_with_status`; the providers' `whole_as_stream`), the bytes are compared with what that Python code made
(kept in `tests/support/reference.py`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ferroute import _core
from ferroute.app.reasoning import response_body as _reasoning_body
from ferroute.app.reasoning import strip_encrypted as _strip_encrypted
from ferroute.app.records import with_status as _with_status
from ferroute.store import items
from ferroute.store.crypto import ReasoningCipher, seal_item
from tests.support.fixtures import FIXTURES, fixture_files
from tests.support.grammar import check_events, check_stream
from tests.support.mock_upstream import WHOLE_MESSAGE, WHOLE_RESPONSE, _completion_body
from tests.support.reference import anthropic_as_stream, chat_completions_as_stream, responses_as_stream
from tests.support.reference import frames as _reasoning_frames

Translator = _core.ChatCompletionsTranslator | _core.AnthropicTranslator | _core.ResponsesTranslator
CLASSES: dict[str, type[Translator]] = {
    "chat_completions": _core.ChatCompletionsTranslator,
    "anthropic": _core.AnthropicTranslator,
    "responses": _core.ResponsesTranslator,
}
CASES = [(dialect, path) for dialect in CLASSES for path in fixture_files(dialect)]
RESPONSE_ID = "resp_" + "0123456789ab" * 4
TENANT = "tenant-a"
_SEALED = re.compile(rb'"(ferroute1\.[A-Za-z0-9_-]+)"')
_CLOCK = re.compile(rb'"completed_at":\d+')

CALL_TURN = (
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1",'
    b'"function":{"name":"get","arguments":"{}"}}]}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}\n\n'
    b"data: [DONE]\n\n"
)
ANSWER_TURN = (
    b'data: {"choices":[{"index":0,"delta":{"content":"It is 1."},"finish_reason":"stop"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":7,"total_tokens":27}}\n\n'
    b"data: [DONE]\n\n"
)


def make(dialect: str, **kwargs: Any) -> Translator:
    return CLASSES[dialect]({"model": "m"}, response_id=RESPONSE_ID, created_at=1, **kwargs)


def run(t: Translator, raw: bytes, read: int = 1000) -> bytes:
    out = b"".join(t.feed(raw[i : i + read]) for i in range(0, len(raw), read))
    return out + t.finish()


def opened(cipher: ReasoningCipher, raw: bytes) -> bytes:
    """`raw` with each sealed blob replaced by its plaintext (the nonce is random) and the clock zeroed."""

    def plain(match: re.Match[bytes]) -> bytes:
        return json.dumps(cipher.open(TENANT, match.group(1).decode()), sort_keys=True).encode().replace(b'"', b"'")

    return _CLOCK.sub(b'"completed_at":0', _SEALED.sub(plain, raw))


# --- reasoning policy: the bytes today's Python post-processing gives --------------------------------------


@pytest.mark.parametrize(("dialect", "path"), CASES, ids=[f"{d}/{p.stem}" for d, p in CASES])
def test_strip_and_seal_give_the_bytes_of_todays_post_processing(dialect: str, path: Path) -> None:
    raw = path.read_bytes()
    keep = run(make(dialect), raw)
    keep_body = make(dialect)
    run(keep_body, raw)

    strip = make(dialect, reasoning="strip")
    assert _CLOCK.sub(b"", run(strip, raw)) == _CLOCK.sub(b"", _reasoning_frames(keep, _strip_encrypted))
    assert _CLOCK.sub(b"", strip.client_response_json()) == _CLOCK.sub(
        b"", _reasoning_body(keep_body.response_json(), _strip_encrypted)
    )
    assert _CLOCK.sub(b"", strip.response_json()) == _CLOCK.sub(b"", keep_body.response_json())

    cipher = ReasoningCipher("writer-test-key")
    payloads: list[bytes] = []

    def seal(payload: bytes) -> str:
        payloads.append(payload)
        return cipher.seal_payload(TENANT, payload)

    sealed = make(dialect, reasoning="seal", seal=seal)
    frames = run(sealed, raw)
    cache: dict[str, str] = {}
    today = _reasoning_frames(keep, lambda item: seal_item(cipher, TENANT, item, cache))
    assert opened(cipher, frames) == opened(cipher, today)
    reasoning_items = [i for i in json.loads(keep_body.response_json())["output"] if i["type"] == "reasoning"]
    assert len(payloads) == len(reasoning_items), "each reasoning item is sealed once"
    body = sealed.client_response_json()
    assert opened(cipher, body) == opened(
        cipher, _reasoning_body(keep_body.response_json(), lambda i: seal_item(cipher, TENANT, i, {}))
    )
    # The stored view keeps the upstream's own blob, never the router's.
    assert b"ferroute1." not in sealed.response_json()
    assert _CLOCK.sub(b"", sealed.response_json()) == _CLOCK.sub(b"", keep_body.response_json())
    check_stream(frames)


def test_a_seal_callable_that_raises_raises_from_the_call_that_closed_the_item() -> None:
    def broken(payload: bytes) -> str:
        raise RuntimeError("no key")

    t = make("chat_completions", reasoning="seal", seal=broken)
    t.feed(b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"hm"}}]}\n\n')
    with pytest.raises(RuntimeError, match="no key"):
        t.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n')
    terminal = check_stream_prefix(t.finish())[-1]
    assert terminal["type"] == "response.completed"
    assert terminal["response"]["output"][0]["encrypted_content"] is None


def check_stream_prefix(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: {")]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="framing"):
        make("anthropic", framing="ws")
    with pytest.raises(ValueError, match="seal=callable"):
        make("anthropic", reasoning="seal")
    with pytest.raises(ValueError, match="reasoning"):
        make("anthropic", reasoning="hide")


# --- cancelled and queued: what `_cancelled` and `_with_status` give --------------------------------------


@pytest.mark.parametrize("framing", ["sse", "json"])
def test_cancel_gives_todays_stream_and_stored_object(framing: str) -> None:
    partial = b'data: {"choices":[{"index":0,"delta":{"content":"par"}}]}\n\n'
    today = make("chat_completions")
    today.feed(partial)
    today_out = today.fail("the response was cancelled", code="cancelled", type="server_error")
    today_json = _with_status(today.response_json(), "cancelled")

    t = make("chat_completions", framing=framing)
    t.feed(partial)
    out = t.cancel()
    assert t.status == "cancelled"
    assert t.response_json() == today_json
    if framing == "sse":
        assert out == today_out
    else:
        assert [json.loads(e) for e in t.last_events()] == check_stream_prefix(today_out)
    assert t.cancel() == b""
    assert t.fail("late") == b""


def test_queued_is_todays_snapshot() -> None:
    t = make("responses")
    assert t.queued_json() == _with_status(t.response_json(), "queued")
    assert json.loads(t.queued_json())["status"] == "queued"
    assert t.status == "in_progress"


# --- several upstream calls, the router's own items, JSON lines --------------------------------------------


def tool_loop(
    framing: str, *, hosted: bool = True
) -> tuple[_core.ChatCompletionsTranslator, list[bytes], dict[str, Any] | None]:
    """Two upstream calls, and between them (`hosted`) an item the router makes itself; each call's events."""
    t = _core.ChatCompletionsTranslator(response_id=RESPONSE_ID, created_at=1, framing=framing)  # type: ignore[arg-type]
    messages: list[bytes] = []
    t.next_turn()
    t.feed(CALL_TURN)
    messages += t.last_events()
    t.end_turn()
    messages += t.last_events()
    first = t.turn_result()
    if hosted:
        run_hosted_tool(t, messages)
    t.next_turn()
    t.feed(ANSWER_TURN)
    messages += t.last_events()
    t.end_turn()
    messages += t.last_events()
    assert t.turn_result() == {"status": "completed", "reason": None, "error": None, "function_calls": []}
    t.finish()
    messages += t.last_events()
    return t, messages, first


def run_hosted_tool(t: Translator, messages: list[bytes]) -> None:
    item_id, out = t.open_item({"type": "ferroute:mcp_call", "status": "in_progress", "name": "get"}, prefix="mcp")
    assert item_id.startswith("mcp_")
    assert out.startswith(b"event: response.output_item.added") or out.startswith(b'{"type"')
    messages += t.last_events()
    t.item_event("ferroute:mcp_call.arguments_delta", {"delta": "{}"})
    messages += t.last_events()
    t.done_item(b'{"type":"ferroute:mcp_call","status":"completed","name":"get","output":"1"}')
    messages += t.last_events()


def test_a_tool_loop_is_one_response() -> None:
    # The grammar and the spec's types, on the two calls alone (the types know no router-made item).
    t, frames, first = tool_loop("sse", hosted=False)
    events, response = check_stream(b"".join(frames))
    assert [i["type"] for i in response["output"]] == ["function_call", "message"]
    assert response["usage"]["input_tokens"] == 30
    assert response["usage"]["total_tokens"] == 42
    assert json.loads(t.response_json()) == response

    t, frames, first = tool_loop("sse")
    assert first is not None
    assert first["status"] == "completed"
    assert [(c["call_id"], c["name"], c["arguments"], c["output_index"]) for c in first["function_calls"]] == [
        ("call_1", "get", "{}", 0)
    ]
    raw = b"".join(frames)
    assert raw.endswith(b"data: [DONE]\n\n")
    events = check_stream_prefix(raw)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [(e["output_index"], e["item"]["type"]) for e in events if e["type"] == "response.output_item.added"]
    assert added == [(0, "function_call"), (1, "ferroute:mcp_call"), (2, "message")]
    response = events[-1]["response"]
    delta = next(e for e in events if e["type"] == "ferroute:mcp_call.arguments_delta")
    assert delta == {
        "type": "ferroute:mcp_call.arguments_delta",
        "sequence_number": delta["sequence_number"],
        "item_id": response["output"][1]["id"],
        "output_index": 1,
        "delta": "{}",
    }
    assert [i["type"] for i in response["output"]] == ["function_call", "ferroute:mcp_call", "message"]
    assert response["output"][1]["output"] == "1"
    assert response["usage"]["input_tokens"] == 30
    assert response["usage"]["total_tokens"] == 42
    assert json.loads(t.response_json()) == response


def test_json_lines_are_the_same_events_one_per_message() -> None:
    _, frames, _ = tool_loop("sse")
    _, messages, _ = tool_loop("json")
    sse_events = check_stream_prefix(b"".join(frames))
    assert all(b"\n" not in m and m.startswith(b"{") for m in messages)
    json_events = [json.loads(m) for m in messages]
    assert len(json_events) == len(sse_events)
    for a, b in zip(json_events, sse_events, strict=True):
        if "response" in a:
            a["response"]["completed_at"] = b["response"]["completed_at"]
        assert a == b
    check_events([json.loads(m) for m in tool_loop("json", hosted=False)[1]])


def test_router_items_refuse_what_does_not_fit() -> None:
    t = make("chat_completions")
    with pytest.raises(ValueError, match="no item the router made is open"):
        t.item_event("ferroute:x")
    with pytest.raises(ValueError, match="JSON object"):
        t.open_item(b"[1]")
    with pytest.raises(TypeError):
        t.open_item(3)  # type: ignore[arg-type]


# --- whole bodies: what `whole_as_stream` + `feed` give ------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "body", "as_stream"),
    [
        ("chat_completions", _completion_body("openai-gpt-4o-mini-text-usage"), chat_completions_as_stream),
        ("anthropic", json.dumps(WHOLE_MESSAGE).encode(), anthropic_as_stream),
        ("responses", json.dumps(WHOLE_RESPONSE).encode(), responses_as_stream),
    ],
)
def test_a_whole_body_gives_what_whole_as_stream_gives(
    dialect: str, body: bytes, as_stream: Callable[[bytes], bytes]
) -> None:
    whole = make(dialect)
    out = whole.feed_whole(body)
    streamed = make(dialect)
    expected = run(streamed, as_stream(body))
    assert _CLOCK.sub(b"", out) == _CLOCK.sub(b"", expected)
    assert whole.finish() == b""
    check_stream(out)


def test_a_whole_body_of_another_dialect_raises() -> None:
    t = make("anthropic")
    with pytest.raises(_core.UpstreamError):
        t.feed_whole(b'{"object":"response"}')
    assert t.status == "in_progress"


# --- held calls: the tools the router runs itself ----------------------------------------------------------

HELD_CASES = [
    ("chat_completions", "openai-gpt-4o-parallel-tool-calls-usage", "add"),
    ("chat_completions", "openai-gpt-4o-parallel-tool-calls-usage", "multiply"),
    ("anthropic", "claude-sonnet-4-text-then-parallel-tool-use", "add"),
    ("anthropic", "claude-sonnet-4-thinking-tool-use", "weather"),
    ("responses", "openai-gpt-4o-parallel-function-calls", "add"),
    ("responses", "lmstudio-glm-reasoning-text-function-call", "weather"),
]


def one_turn(t: Translator, raw: bytes, read: int = 1000) -> bytes:
    t.next_turn()
    out = b"".join(t.feed(raw[i : i + read]) for i in range(0, len(raw), read))
    return out + t.end_turn()


@pytest.mark.parametrize(("dialect", "name", "held"), HELD_CASES, ids=[f"{d}/{n}/{h}" for d, n, h in HELD_CASES])
def test_a_held_call_is_reported_and_never_streamed(dialect: str, name: str, held: str) -> None:
    raw = (FIXTURES / dialect / f"{name}.sse").read_bytes()
    plain = make(dialect)
    one_turn(plain, raw)
    plain_result = plain.turn_result()
    t = make(dialect)
    t.hold([held])
    frames = one_turn(t, raw, read=97)
    result = t.turn_result()
    assert plain_result is not None and result is not None
    assert result["status"] == plain_result["status"] == "completed"

    calls = result["function_calls"]
    assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == [
        (c["call_id"], c["name"], c["arguments"]) for c in plain_result["function_calls"]
    ], "the same calls, in the order the model made them"
    assert all(set(c) == {"output_index", "id", "call_id", "name", "arguments", "held"} for c in calls)
    assert [c["held"] for c in calls] == [c["name"] == held for c in calls]
    for call in calls:
        if call["held"]:
            assert (call["output_index"], call["id"]) == (None, None)
            json.loads(call["arguments"])  # whole JSON, from deltas or from a `.done`
            assert call["call_id"].encode() not in frames
        else:
            assert isinstance(call["output_index"], int) and call["id"].startswith("fc_")

    frames += t.finish()
    events, response = check_stream(frames)
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == list(range(len(added)))
    assert not any(e.get("item", {}).get("name") == held for e in events)
    plain_output = json.loads(plain.response_json())["output"]
    assert len(response["output"]) == len(plain_output) - sum(c["held"] for c in calls)
    for call in calls:
        if not call["held"]:
            assert response["output"][call["output_index"]]["id"] == call["id"]
    assert json.loads(t.turn_items()) == response["output"], "after the end: every item"


def test_turn_items_are_the_turns_own_and_held_calls_reset_each_turn() -> None:
    t = _core.ChatCompletionsTranslator(response_id=RESPONSE_ID, created_at=1)
    t.hold(name for name in ["get", "other"])
    assert t.turn_items() == b"[]"
    t.next_turn()
    frames = t.feed(CALL_TURN) + t.end_turn()
    assert b"call_1" not in frames and b"function_call" not in frames
    assert t.turn_result() == {
        "status": "completed",
        "reason": None,
        "error": None,
        "function_calls": [
            {"output_index": None, "id": None, "call_id": "call_1", "name": "get", "arguments": "{}", "held": True}
        ],
    }
    assert json.loads(t.turn_items()) == [], "a held call is no item"
    messages: list[bytes] = []
    run_hosted_tool(t, messages)
    t.next_turn()
    t.feed(ANSWER_TURN)
    t.end_turn()
    result = t.turn_result()
    assert result is not None and result["function_calls"] == []
    items_json = json.loads(t.turn_items())
    assert [i["type"] for i in items_json] == ["message"]
    assert items_json[0]["content"][0]["text"] == "It is 1."
    t.finish()
    output = json.loads(t.response_json())["output"]
    assert [i["type"] for i in output] == ["ferroute:mcp_call", "message"]
    assert items_json == output[1:]
    assert json.loads(t.turn_items()) == output


def test_turn_items_keep_the_upstreams_encrypted_content() -> None:
    raw = (FIXTURES / "anthropic" / "claude-sonnet-4-thinking-tool-use.sse").read_bytes()
    t = make("anthropic", reasoning="strip")
    one_turn(t, raw)
    items_json = json.loads(t.turn_items())
    assert items_json == json.loads(t.response_json())["output"]
    reasoning = next(i for i in items_json if i["type"] == "reasoning")
    assert reasoning["encrypted_content"], "the stored view, not the client's null"
    assert json.loads(t.client_response_json())["output"][0]["encrypted_content"] is None


def test_hold_takes_an_iterable_of_names() -> None:
    t = make("chat_completions")
    with pytest.raises(TypeError):
        t.hold("get")  # a str is an iterable of characters: never meant
    with pytest.raises(TypeError):
        t.hold([1])  # type: ignore[list-item]
    t.hold(["get"])
    t.hold([])  # replaces the set: nothing held
    t.next_turn()
    t.feed(CALL_TURN)
    t.end_turn()
    result = t.turn_result()
    assert result is not None
    assert [(c["held"], c["output_index"]) for c in result["function_calls"]] == [(False, 0)]


def test_a_live_call_streams_into_its_own_item_and_waits_to_be_closed() -> None:
    t = make("chat_completions")
    live = {"get": {"type": "mcp_call", "server_label": "s", "name": "get", "arguments": "", "status": "in_progress"}}
    with pytest.raises(ValueError, match="not held"):
        t.hold(["other"], live=live, prefix="mcp", events="response.mcp_call")
    with pytest.raises(TypeError):
        t.hold(["get"], live=live)  # (its events' base is needed)
    t.hold(["get"], live=live, prefix="mcp", events="response.mcp_call")
    t.next_turn()
    half = CALL_TURN.index(b"\n\n") + 2
    sent = t.feed(CALL_TURN[:half])
    calls = t.turn_calls()  # (while the turn runs: the call so far, with its item)
    assert [(c["call_id"], c["held"], c["output_index"]) for c in calls] == [("call_1", True, 0)]
    assert calls[0]["id"].startswith("mcp_") and t.waiting_items() == 0
    sent += t.feed(CALL_TURN[half:]) + t.end_turn()
    assert t.waiting_items() == 1
    assert t.turn_result() is not None and json.loads(t.turn_items()) == [], "waiting: in no snapshot yet"
    done = {**live["get"], "arguments": "{}", "output": "1", "error": None, "status": "completed"}
    sent += t.close_live("response.mcp_call.completed", done)
    with pytest.raises(ValueError, match="no live call"):
        t.close_live("response.mcp_call.completed", done)
    t.next_turn()
    sent += t.feed(ANSWER_TURN) + t.finish()
    events, response = check_stream(sent)
    assert [e["type"] for e in events if "mcp_call" in e["type"]] == [
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
    ]
    assert [i["type"] for i in response["output"]] == ["mcp_call", "message"]
    assert response["output"][0]["output"] == "1" and response["output"][0]["id"] == calls[0]["id"]


def _listed_then_turn() -> tuple[Translator, bytes]:
    """A Chat Completions translator that wrote a tool listing (the router's item) and began an upstream call."""
    first = make("chat_completions")
    first.hold(["get"])
    listing = {"type": "mcp_list_tools", "server_label": "s", "tools": []}
    sent = first.open_item({**listing, "status": "in_progress"}, prefix="mcpl")[1]
    sent += first.item_event("response.mcp_list_tools.in_progress")
    sent += first.item_event("response.mcp_list_tools.completed")
    sent += first.done_item({**listing, "status": "completed"})
    first.next_turn()
    return first, sent


@pytest.mark.parametrize("dialect", ["anthropic", "responses"])
def test_adopt_goes_on_with_another_dialects_response(dialect: str) -> None:
    first, sent = _listed_then_turn()
    nothing = first.feed(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0}}\n\n')
    assert nothing == b""
    # The first upstream failed before its content: the next target's translator takes the response over.
    later = make(dialect)
    with pytest.raises(TypeError):
        later.adopt("not a translator")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        later.adopt(later)  # (it is itself, already borrowed)
    later.adopt(first)
    assert later.response_id == RESPONSE_ID and later.output_items == 1
    later.next_turn()
    raw = WHOLE_MESSAGE if dialect == "anthropic" else WHOLE_RESPONSE
    sent += later.feed_whole(json.dumps(raw).encode()) + later.finish()
    _, response = check_stream(sent)
    assert response["output"][0]["type"] == "mcp_list_tools"
    assert len(response["output"]) > 1 and response["id"] == RESPONSE_ID
    assert response["usage"]["input_tokens"] > 3, "the first upstream's tokens count too"


def test_adopt_a_copy_races_a_second_upstream_beside_the_first() -> None:
    first, sent = _listed_then_turn()
    early = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":0}}\n\n'
    sent += first.feed(early)  # (its upstream's usage so far, no content yet)
    # A hedge: a copy of the response as this turn found it, in another dialect; the first one goes on meanwhile.
    hedge = make("anthropic")
    hedge.adopt(first, copy=True)
    hedge.next_turn()
    assert hedge.response_id == first.response_id == RESPONSE_ID and hedge.output_items == first.output_items == 1
    theirs = hedge.feed_whole(json.dumps(WHOLE_MESSAGE).encode()) + hedge.finish()
    # The first one, left as it was, can still win: its stream is whole and valid on its own.
    ours = first.feed(ANSWER_TURN) + first.end_turn() + first.finish()
    _, response = check_stream(sent + ours)
    assert [i["type"] for i in response["output"]] == ["mcp_list_tools", "message"]
    # And the hedge's too, from the same point: the same sequence numbers go on, the listing is its first item.
    _, response = check_stream(sent + theirs)
    assert response["output"][0]["type"] == "mcp_list_tools" and len(response["output"]) > 1
    assert response["usage"]["input_tokens"] == WHOLE_MESSAGE["usage"]["input_tokens"], "only its own call's"
    # Once the turn has an item, there is nothing to race: the copy is refused.
    with pytest.raises(ValueError, match="start of a turn"):
        make("anthropic").adopt(first, copy=True)


WHOLE_CALL = {
    "index": 0,
    "id": "call_whole",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
WHOLE_COMPLETION = {
    "id": "chatcmpl-json", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "finish_reason": "tool_calls",
                 "message": {"role": "assistant", "content": "Checking.", "tool_calls": [WHOLE_CALL]}}],
}  # fmt: skip


@pytest.mark.parametrize(
    ("dialect", "body", "as_stream"),
    [
        ("chat_completions", WHOLE_COMPLETION, chat_completions_as_stream),
        ("anthropic", WHOLE_MESSAGE, anthropic_as_stream),
        ("responses", WHOLE_RESPONSE, responses_as_stream),
    ],
    ids=["chat_completions", "anthropic", "responses"],
)
def test_a_held_call_in_a_whole_body_is_held_as_in_its_stream(
    dialect: str, body: dict[str, Any], as_stream: Callable[[bytes], bytes]
) -> None:
    raw = json.dumps(body).encode()
    whole = make(dialect)
    whole.hold(["get_weather"])
    whole.next_turn()
    out = whole.feed_whole(raw)
    streamed = make(dialect)
    streamed.hold(["get_weather"])
    assert one_turn(streamed, as_stream(raw)) == out
    assert whole.turn_result() == streamed.turn_result()
    result = whole.turn_result()
    assert result is not None
    [call] = result["function_calls"]
    assert call["held"] and call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert b"get_weather" not in out
    assert whole.turn_items() == streamed.turn_items()
    assert "function_call" not in [i["type"] for i in json.loads(whole.turn_items())]
    converted = json.loads(whole.convert(raw))
    assert "function_call" not in [i["type"] for i in converted["output"]]
    assert [i["type"] for i in converted["output"]] == [i["type"] for i in json.loads(whole.turn_items())]


# --- ids --------------------------------------------------------------------------------------------------


def test_ids_come_from_the_core() -> None:
    assert items.OUTPUT_ITEMS == _core.OUTPUT_ITEMS == 0x8000
    rid = _core.new_id("resp")
    assert re.fullmatch(r"resp_[0-9a-f]{48}", rid)
    assert _core.item_id("msg", rid, 2) == f"msg_{rid[5:]}0002" == items.item_id("message", rid, 2)
    assert items.item_id("message", rid, items.OUTPUT_ITEMS + 1) == f"msg_{rid[5:]}8001"
    assert items.response_of(items.new_id("function_call")) is None
    assert re.fullmatch(r"fc_[0-9a-f]{48}", items.new_id("function_call"))

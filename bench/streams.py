"""Synthetic Open Responses streams for the benches, in the shape OpenAI sends (`tests/fixtures/responses/`).

A reasoning item with a streamed summary, a message with streamed output_text, then a function call with
streamed arguments: ~10,000 events of ~250 bytes each (with the `event:` line and framing)."""

from __future__ import annotations

import json
from typing import Any

from bench.chat_stream import WORDS

RESPONSE_ID = "resp_065915db01d8635a016a3c125658a081a38159e7d307d23d65"
RS_ID = "rs_065915db01d8635a016a3c1256d2dc81a3a6206cbb8ad411b6"
MSG_ID = "msg_065915db01d8635a016a3c125c524c81a39e48ac0ebbcb6b30"
FC_ID = "fc_017e85da2ae23b69016a3c12560820819db3b6e8a38dddad65"


def _response(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": 1782955818,
        "status": status,
        "background": False,
        "completed_at": 1782955825 if status == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": "gpt-5-2025-08-07",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": "high", "summary": "detailed"},
        "safety_identifier": None,
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "metadata": {},
    }


def open_responses_stream(n: int = 10_000, *, done: bool = False) -> bytes:
    """~`n` events: `n // 5` reasoning summary deltas, `n * 7 // 10` output_text deltas and `n // 10` function
    call argument deltas, with the events that open and close them; `done` appends `data: [DONE]`."""
    n_summary, n_text = n // 5, n * 7 // 10
    n_args = n - n_summary - n_text - 20
    events: list[dict[str, Any]] = []
    add = events.append
    add({"type": "response.created", "response": _response("in_progress", [])})
    add({"type": "response.in_progress", "response": _response("in_progress", [])})

    rs = {"id": RS_ID, "type": "reasoning", "summary": []}
    add({"type": "response.output_item.added", "item": rs, "output_index": 0})
    at = {"item_id": RS_ID, "output_index": 0, "summary_index": 0}
    add({"type": "response.reasoning_summary_part.added", **at, "part": {"type": "summary_text", "text": ""}})
    summary = [WORDS[i % len(WORDS)] for i in range(n_summary)]
    for i, word in enumerate(summary):
        add({"type": "response.reasoning_summary_text.delta", **at, "delta": word, "obfuscation": "x" * (i % 9 + 3)})
    summary_text = "".join(summary)
    add({"type": "response.reasoning_summary_text.done", **at, "text": summary_text})
    add({"type": "response.reasoning_summary_part.done", **at, "part": {"type": "summary_text", "text": summary_text}})
    rs_done = {**rs, "summary": [{"type": "summary_text", "text": summary_text}]}
    add({"type": "response.output_item.done", "item": rs_done, "output_index": 0})

    msg = {"id": MSG_ID, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    add({"type": "response.output_item.added", "item": msg, "output_index": 1})
    at = {"item_id": MSG_ID, "output_index": 1, "content_index": 0}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    add({"type": "response.content_part.added", **at, "part": part})
    words = [WORDS[i % len(WORDS)] for i in range(n_text)]
    for i, word in enumerate(words):
        add({"type": "response.output_text.delta", **at, "delta": word, "logprobs": [], "obfuscation": "y" * (i % 9)})
    text = "".join(words)
    add({"type": "response.output_text.done", **at, "text": text, "logprobs": []})
    add({"type": "response.content_part.done", **at, "part": {**part, "text": text}})
    msg_done = {**msg, "status": "completed", "content": [{**part, "text": text}]}
    add({"type": "response.output_item.done", "item": msg_done, "output_index": 1})

    fc = {"id": FC_ID, "type": "function_call", "status": "in_progress", "arguments": "", "call_id": "call_1"}
    fc["name"] = "get_weather"
    add({"type": "response.output_item.added", "item": fc, "output_index": 2})
    at = {"item_id": FC_ID, "output_index": 2}
    pieces = ['{"cities": ['] + ['"Florence", ' for _ in range(max(n_args - 2, 0))] + ['"Rome"]}']
    for piece in pieces:
        add({"type": "response.function_call_arguments.delta", **at, "delta": piece, "obfuscation": "zzzz"})
    arguments = "".join(pieces)
    add({"type": "response.function_call_arguments.done", **at, "arguments": arguments})
    fc_done = {**fc, "status": "completed", "arguments": arguments}
    add({"type": "response.output_item.done", "item": fc_done, "output_index": 2})
    add({"type": "response.completed", "response": _response("completed", [rs_done, msg_done, fc_done])})

    out = []
    for seq, event in enumerate(events):
        event["sequence_number"] = seq
        data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        out.append(f"event: {event['type']}\ndata: {data}\n\n".encode())
    if done:
        out.append(b"data: [DONE]\n\n")
    return b"".join(out)

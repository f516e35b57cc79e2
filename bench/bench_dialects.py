"""The three upstream dialects' translators on the same answer: 10,000 text deltas, each framed as its upstream
frames it (Chat Completions chunks as OpenAI sends them, Anthropic `content_block_delta` events, OpenAI Responses
`response.output_text.delta` events), whole and in 4 KiB reads.

    make develop && .venv/bin/pytest bench/bench_dialects.py --benchmark-enable --benchmark-only

Each case also asserts its output, so under the default `--benchmark-disable` it runs once as a test."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest

import ferroute
from bench.chat_stream import WORDS, openai_text_stream, reads

N = 10_000


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def anthropic_text_stream(n: int = N) -> bytes:
    """An Anthropic Messages text answer of `n` `text_delta`s."""
    head = _sse("message_start", {"type": "message_start", "message": {
        "id": "msg_01KTBB57LAzaSZs8kMNvfnsY", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
        "content": [], "stop_reason": None, "usage": {"input_tokens": 12, "output_tokens": 1}}})  # fmt: skip
    head += _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}})  # fmt: skip
    body = b"".join(
        _sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": WORDS[i % len(WORDS)]}},
        )
        for i in range(n)
    )
    tail = _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    tail += _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                   "usage": {"output_tokens": n}})  # fmt: skip
    return head + body + tail + _sse("message_stop", {"type": "message_stop"})


def responses_text_stream(n: int = N) -> bytes:
    """An OpenAI Responses text answer of `n` `response.output_text.delta`s."""
    item_id = "msg_065915db01d8635a016a3c1259e0c881a3b2b0a9a8c7f0e1d2"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    response = {"id": "resp_065915db01d8635a016a3c125658a081a38159e7d307d23d65", "object": "response",
                "status": "in_progress", "model": "gpt-4o-2024-08-06", "output": []}  # fmt: skip
    item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    events = [
        ("response.created", {"response": response}),
        ("response.in_progress", {"response": response}),
        ("response.output_item.added", {"output_index": 0, "item": item}),
        ("response.content_part.added", {**where, "part": {"type": "output_text", "text": "", "annotations": []}}),
        *(
            (
                "response.output_text.delta",
                {**where, "delta": WORDS[i % len(WORDS)], "logprobs": [], "obfuscation": "auU6fTns"},
            )
            for i in range(n)
        ),
    ]
    text = "".join(WORDS[i % len(WORDS)] for i in range(n))
    done = {**item, "status": "completed", "content": [{"type": "output_text", "text": text, "annotations": []}]}
    events += [
        ("response.output_item.done", {"output_index": 0, "item": done}),
        (
            "response.completed",
            {
                "response": {
                    **response,
                    "status": "completed",
                    "output": [done],
                    "usage": {"input_tokens": 12, "output_tokens": n, "total_tokens": n + 12},
                }
            },
        ),
    ]
    return b"".join(_sse(kind, {"type": kind, **data, "sequence_number": k}) for k, (kind, data) in enumerate(events))


DIALECTS: dict[str, tuple[Callable[[int], bytes], Callable[[], Any]]] = {
    "chat_completions": (openai_text_stream, ferroute.ChatCompletionsTranslator),
    "anthropic": (anthropic_text_stream, ferroute.AnthropicTranslator),
    "responses": (responses_text_stream, ferroute.ResponsesTranslator),
}


def run(make: Callable[[], Any], chunks: list[bytes]) -> bytes:
    t = make()
    return b"".join([t.feed(c) for c in chunks]) + t.finish()


@pytest.mark.parametrize("read_size", [None, 4096], ids=["whole", "4KiB"])
@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_translate_dialect(benchmark: Any, dialect: str, read_size: int | None) -> None:
    stream, make = DIALECTS[dialect]
    chunks = reads(stream(N), read_size)
    benchmark.group = f"dialects {'whole' if read_size is None else '4KiB reads'}"
    benchmark.extra_info["upstream_events"] = N
    out = benchmark(run, make, chunks)
    assert out.endswith(b"data: [DONE]\n\n")
    assert out.count(b"event: response.output_text.delta\n") == N
    last = orjson.loads(out.rsplit(b"event: response.completed\ndata: ", 1)[1].split(b"\n", 1)[0])
    text = last["response"]["output"][0]["content"][0]["text"]
    assert text == "".join(WORDS[i % len(WORDS)] for i in range(N))

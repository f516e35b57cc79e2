"""Synthetic Chat Completions streams for the benches, built from the shape of recorded chunks.

~10,000 chunks of ~250-300 bytes each, as OpenAI and vLLM send them (`tests/fixtures/chat_completions/`)."""

from __future__ import annotations

import json

WORDS = [" The", " capital", " of", " the", " UK", " is", " London", ",", " a", " city", " of", " \u00e9t\u00e9", " 🚀"]
OPENAI = (
    '{{"id":"chatcmpl-Dx0Xq5Xx9rHB2ehcHZCRDsnuymUXc","object":"chat.completion.chunk","created":1782955818,'
    '"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_d0469e1700",'
    '"choices":[{{"index":0,"delta":{{"content":{word}}},"logprobs":null,"finish_reason":null}}],"usage":null,'
    '"obfuscation":"auU6fTns"}}'
)
VLLM = (
    '{{"id":"chatcmpl-66c64647aba6","object":"chat.completion.chunk","created":1782955818,"model":"Qwen/Qwen3-8B",'
    '"choices":[{{"index":0,"delta":{{"{field}":{word}}},"logprobs":null,"finish_reason":null,"stop_reason":null}}]}}'
)
USAGE = {"prompt_tokens": 12, "completion_tokens": 10_000, "total_tokens": 10_012}


def _frame(payload: str) -> bytes:
    return b"data: " + payload.encode() + b"\n\n"


def _finish(model: str) -> bytes:
    stop = {
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    usage = {"object": "chat.completion.chunk", "model": model, "choices": [], "usage": USAGE}
    return _frame(json.dumps(stop)) + _frame(json.dumps(usage)) + b"data: [DONE]\n\n"


def openai_text_stream(n: int = 10_000) -> bytes:
    """An OpenAI text stream of `n` content chunks, then finish_reason, the usage chunk and [DONE]."""
    words = [json.dumps(WORDS[i % len(WORDS)], ensure_ascii=False) for i in range(n)]
    return b"".join(_frame(OPENAI.format(word=w)) for w in words) + _finish("gpt-4o-mini")


def vllm_reasoning_stream(n: int = 10_000) -> bytes:
    """A vLLM stream: `n // 2` reasoning_content chunks, then `n // 2` content chunks."""
    frames = []
    for i in range(n):
        field = "reasoning_content" if i < n // 2 else "content"
        frames.append(_frame(VLLM.format(field=field, word=json.dumps(WORDS[i % len(WORDS)], ensure_ascii=False))))
    return b"".join(frames) + _finish("Qwen/Qwen3-8B")


STREAMS = {"openai-text": openai_text_stream, "vllm-reasoning": vllm_reasoning_stream}


def reads(raw: bytes, size: int | None) -> list[bytes]:
    """The stream as the network would hand it over: whole, or in `size`-byte reads."""
    if size is None:
        return [raw]
    return [raw[i : i + size] for i in range(0, len(raw), size)]

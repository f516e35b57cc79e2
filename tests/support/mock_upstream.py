"""A mock Chat Completions, Anthropic Messages and OpenAI Responses server, run as its own process by the end-to-end
tests (stdlib asyncio only).

`POST …/chat/completions`, `POST …/messages` and `POST …/responses` answer according to the upstream model name
the router sends:

- `fixture:<name>` replays `tests/fixtures/chat_completions/<name>.sse` (`…/messages`:
  `tests/fixtures/anthropic/<name>.sse`; `…/responses`: `tests/fixtures/responses/<name>.sse`) byte for byte
  (chunked);
- `json:<name>` answers `application/json` with a `chat.completion` built from that fixture's text
  (`…/messages`, `…/responses`: a whole message / response object with reasoning, text and a tool call,
  as servers that ignore `stream` answer);
- `status:<code>` answers that HTTP status with a JSON error body holding a secret (429 adds
  `Retry-After: 7`), so tests can check nothing of it reaches the client;
- `echo_key` starts a stream and then fails it with an in-stream error (in the dialect of the path) whose
  message and code repeat the key the request carried (`Authorization` / `x-api-key`), sent in two writes that
  split the key;
- `error_first` streams an in-band error as its first event (in the dialect of the path: an error chunk;
  `message_start` then an `error` event; an `error` event), then ends: an upstream that fails before any content;
- `stall` sends the headers and then nothing; `hang` sends nothing at all; `keepalives` sends the headers and
  then only keep-alives, every 0.2 s, forever: `: ping` comments and blank lines (`…/messages`: also Anthropic's
  `ping` events), an upstream that is busy but says nothing;
- `agent` plays a model in a tool loop, in the dialect of the path, shaped as the recorded parallel tool-call
  streams (each builder, `_agent_chat` and the two after it, names its fixtures; fresh random ids, `agent` as
  the model, usage from the body's size):
  - when the conversation's last input is a tool result (Chat Completions: the last message has role `tool`;
    Messages: the last message is a user one with `tool_result` blocks; Responses: the last input item is a
    `function_call_output`), a text answer `Results: <name>=<result>; <name>=<result>` over every tool result
    after the last assistant turn (Chat Completions, Messages: after the last `assistant` message; Responses:
    the `function_call_output` items after the last `message` item, any role), in order, each named by the call
    with its call id in the history (`unknown` if none) and its text (a string, or its text parts joined by
    newlines); it ends normally (`finish_reason: stop`, `stop_reason: end_turn`, `response.completed`);
  - else the text of the last user message is read for directives `call <name> <json object>` (any number,
    e.g. separated by `;` or newlines: `call add {"a": 2, "b": 3}; call sleep {"seconds": 1}`), answered with
    one assistant turn holding one tool call per directive, in order (parallel calls: several `tool_calls`
    indexes, `tool_use` blocks or `function_call` items, the arguments streamed in two or three pieces),
    preceded by the text `Calling tools.` when the word `narrate` comes before the first directive (and, on
    `…/messages`, by a thinking block with a signature when the prompt holds the word `think`); it ends
    with `finish_reason: tool_calls`, `stop_reason: tool_use`, `response.completed`. The name called is the
    offered function tool (the request's `tools`) named `<name>`, else the first one whose name ends with
    `_<name>`, else `<name>` itself (a call to a tool that was not offered). `tool_choice` is not looked at:
    the directives are followed whatever it says;
  - with no directive, the text `No tools needed.`;
- anything else: a short generated text stream (in the dialect of the path).

Options follow a `?` in the model name, `&`-separated: `delay=<s>` waits before answering,
`drip=<s>` sleeps between writes, `chunk=<n>` writes n bytes at a time (default: one SSE event per
write), `drop=<n>` closes the connection after n body bytes (a broken chunked body),
`stall_after=<n>` stops sending (but keeps the connection open) after n bytes, `crlf=1` sends CRLF
line ends (as sse-starlette servers do), `pings=<n>` sends n keep-alives first (`: ping` comments;
Anthropic's `ping` events on `…/messages`), `fail=<n>` answers the first n requests for this exact model string
with HTTP `fail_status` (default 503; a 429 carries `Retry-After: <retry_after>`, default 7) and the later ones
as usual (counted per server process), `fail_from=<n>` answers the n-th request for this model string and every
later one so (a tool loop's later turn that fails), `slow_from=<n>` keeps `delay` and `drip` for the n-th request
for this model string and the later ones only (a tool loop's later turn that is slow), `reject_blobs=1` answers 400
as OpenAI and Anthropic do to a reasoning blob they cannot verify (`invalid_encrypted_content`; "Invalid
`signature` in `thinking` block") when the request carries one (an `encrypted_content`, a `signature`, a
`redacted_thinking` block), `tag=<x>` does nothing but mark the request.

`GET /requests` lists what the server received (`path`, `headers`, `body` as JSON, and `closed_early`
once the client has hung up before the answer ended); `DELETE /requests` clears the list.

Run: `python -m tests.support.mock_upstream [--port N]`; it prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import string
import sys
import time
from pathlib import Path
from typing import Any

_RECORDED = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURES = _RECORDED / "chat_completions"
ANTHROPIC = _RECORDED / "anthropic"
RESPONSES = _RECORDED / "responses"
SECRET = "upstream-secret-detail-7f3a"

received: list[dict[str, Any]] = []
failures: dict[str, int] = {}  # requests so far per model string with a `fail`, `fail_from` or `slow_from` option


def _options(model: str) -> tuple[str, dict[str, float]]:
    name, _, query = model.partition("?")
    options: dict[str, float] = {}
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key != "tag":  # `tag` only makes a request easy to find in /requests
            options[key] = float(value)
    return name, options


def _events(raw: bytes) -> list[bytes]:
    """Split a recorded stream into its events, keeping every byte (CRLF, comments) as recorded."""
    parts = re.split(rb"(\r\n\r\n|\n\n|\r\r)", raw)
    events = [parts[i] + (parts[i + 1] if i + 1 < len(parts) else b"") for i in range(0, len(parts), 2)]
    return [e for e in events if e]


def _token_logprobs(word: str, n: int, top: int) -> dict[str, Any]:
    """A token's log probabilities as OpenAI gives them (Chat Completions and Responses alike): `top` alternatives,
    the first the token itself; the last word's `bytes` null, as OpenAI gives it for a token that is no whole
    UTF-8 on its own."""
    logprob = -0.125 * (n + 1)
    alternatives = [{"token": word, "logprob": logprob, "bytes": list(word.encode())}]
    alternatives += [
        {"token": f"alt{k}", "logprob": logprob - k, "bytes": list(f"alt{k}".encode())} for k in range(1, top)
    ]
    return {"token": word, "logprob": logprob, "bytes": None if n == 4 else list(word.encode()),
            "top_logprobs": alternatives[:top]}  # fmt: skip


def _generated(model: str, request: dict[str, Any]) -> bytes:
    out = b""
    for n, word in enumerate(["Hello", " from", " the", " mock", " upstream."]):
        choice: dict[str, Any] = {"index": 0, "delta": {"content": word}, "finish_reason": None}
        if request.get("logprobs"):  # (asked for: `logprobs: true`, `top_logprobs: <n>`)
            choice["logprobs"] = {"content": [_token_logprobs(word, n, request.get("top_logprobs") or 0)]}
        chunk = {"id": "chatcmpl-m", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [choice]}  # fmt: skip
        out += b"data: " + json.dumps(chunk).encode() + b"\n\n"
    done = {"id": "chatcmpl-m", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}  # fmt: skip
    usage = {"id": "chatcmpl-m", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}  # fmt: skip
    return (
        out
        + b"data: "
        + json.dumps(done).encode()
        + b"\n\ndata: "
        + json.dumps(usage).encode()
        + b"\n\ndata: [DONE]\n\n"
    )


def _generated_messages(model: str, request: dict[str, Any]) -> bytes:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_m", "type": "message", "role": "assistant", "model": model,
                                              "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
          for word in ["Hello", " from", " the", " mock", " upstream."]),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]  # fmt: skip
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


def _generated_responses(model: str, request: dict[str, Any]) -> bytes:
    item = {"id": "msg_up", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    response = {"id": "resp_up", "object": "response", "status": "in_progress", "model": model, "output": []}
    words = ["Hello", " from", " the", " mock", " upstream."]
    text = "".join(words)
    part = {"type": "output_text", "text": text, "annotations": []}
    done = {**item, "status": "completed", "content": [part]}
    where = {"item_id": "msg_up", "output_index": 0}
    logprobs = "message.output_text.logprobs" in (request.get("include") or [])
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.in_progress", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", **where, "content_index": 0, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **where, "content_index": 0, "delta": w,
           **({"logprobs": [_token_logprobs(w, n, request.get("top_logprobs") or 0)]} if logprobs else {})}
          for n, w in enumerate(words)),
        {"type": "response.output_text.done", **where, "content_index": 0, "text": text},
        {"type": "response.content_part.done", **where, "content_index": 0, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": {**response, "status": "completed", "output": [done],
                                                     "usage": {"input_tokens": 5, "output_tokens": 5,
                                                               "total_tokens": 10}}},
    ]  # fmt: skip
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps({**e, "sequence_number": n}).encode())
        for n, e in enumerate(events)
    )


# --- `agent`: a model that calls the tools the last user message names ---------------------------------------------

_DIRECTIVE = re.compile(r"\bcall\s+([A-Za-z0-9_.:/-]+)\s*(?=\{)")
_TEXT_PARTS = ("text", "input_text", "output_text")


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _random_id(size: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(random.choices(alphabet, k=size))


def _text_of(content: Any) -> str:
    """A message's content or a tool's output: a string, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str)
        )
    return ""


def _directives(text: str) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """The `call <name> <json object>` directives of `text`, in order, and whether `narrate` comes before them."""
    calls: list[tuple[str, dict[str, Any]]] = []
    narrate = False
    decoder = json.JSONDecoder()
    at = 0
    while match := _DIRECTIVE.search(text, at):
        try:
            arguments, at = decoder.raw_decode(text, match.end())
        except ValueError:
            at = match.end()
            continue
        if isinstance(arguments, dict):
            if not calls:
                narrate = re.search(r"\bnarrate\b", text[: match.start()]) is not None
            calls.append((match.group(1), arguments))
    return calls, narrate


def _pieces(arguments: str) -> list[str]:
    """The arguments in two pieces (three from 6 characters on), as models stream them."""
    if len(arguments) < 6:
        return [arguments[:1], arguments[1:]]
    third = len(arguments) // 3
    return [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) or [text]


def _agent_turn(path: str, request: dict[str, Any]) -> tuple[list[tuple[str, str]] | None, str, list[str]]:
    """What the conversation asks of the model, in the dialect of `path`: the trailing tool results as
    (tool name, result text) when its last input is one (else None), the last user message's text, and the
    names of the offered function tools."""
    if path.endswith("/messages"):
        messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
        calls = {
            block.get("id"): block.get("name")
            for m in messages
            if m.get("role") == "assistant" and isinstance(m.get("content"), list)
            for block in m["content"]
            if isinstance(block, dict) and block.get("type") == "tool_use"
        }
        tools = [t["name"] for t in request.get("tools") or [] if isinstance(t, dict) and "name" in t]

        def results_in(message: dict[str, Any]) -> list[dict[str, Any]]:
            content = message.get("content")
            blocks = content if message.get("role") == "user" and isinstance(content, list) else []
            return [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]

        if messages and results_in(messages[-1]):
            start = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1) + 1
            results = [
                (str(calls.get(b.get("tool_use_id")) or "unknown"), _text_of(b.get("content")))
                for m in messages[start:]
                for b in results_in(m)
            ]
            return results, "", tools
        users = [m for m in messages if m.get("role") == "user"]
        return None, _text_of(users[-1].get("content")) if users else "", tools
    if path.endswith("/responses"):
        items = request.get("input")
        tools = [
            t["name"]
            for t in request.get("tools") or []
            if isinstance(t, dict) and t.get("type") == "function" and "name" in t
        ]
        if isinstance(items, str):
            return None, items, tools
        items = [i for i in items or [] if isinstance(i, dict)]
        kinds = [i.get("type", "message") for i in items]
        if kinds and kinds[-1] == "function_call_output":
            names = {i.get("call_id"): i.get("name") for i in items if i.get("type") == "function_call"}
            start = max((n for n, kind in enumerate(kinds) if kind == "message"), default=-1) + 1
            results = [
                (str(names.get(i.get("call_id")) or "unknown"), _text_of(i.get("output")))
                for i in items[start:]
                if i.get("type") == "function_call_output"
            ]
            return results, "", tools
        users = [i for i in items if i.get("type", "message") == "message" and i.get("role") == "user"]
        return None, _text_of(users[-1].get("content")) if users else "", tools
    messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
    tools = [
        t["function"]["name"]
        for t in request.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
    ]
    if messages and messages[-1].get("role") == "tool":
        names = {
            call.get("id"): (call.get("function") or {}).get("name")
            for m in messages
            if m.get("role") == "assistant"
            for call in m.get("tool_calls") or []
            if isinstance(call, dict)
        }
        start = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1) + 1
        results = [
            (str(names.get(m.get("tool_call_id")) or "unknown"), _text_of(m.get("content")))
            for m in messages[start:]
            if m.get("role") == "tool"
        ]
        return results, "", tools
    users = [m for m in messages if m.get("role") == "user"]
    return None, _text_of(users[-1].get("content")) if users else "", tools


def _obfuscation() -> str:
    """OpenAI's `obfuscation` padding (random characters that hide the length of what a chunk carries)."""
    return _random_id(random.randint(0, 15))


def _agent_chat(model: str, text: str | None, calls: list[tuple[str, str]], tokens: tuple[int, int]) -> bytes:
    """Shaped as openai-gpt-4o-parallel-tool-calls-usage.sse (calls) and openai-gpt-4o-mini-text-usage.sse (text)."""
    head = {"id": "chatcmpl-" + _random_id(29), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "service_tier": "default", "system_fingerprint": "fp_mockagent"}  # fmt: skip

    def chunk(delta: dict[str, Any]) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return {**head, "usage": None, "choices": [choice], "obfuscation": _obfuscation()}

    if text is None:
        chunks = [chunk({"role": "assistant", "content": None})]
    else:
        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        chunks += [chunk({"content": word}) for word in _words(text)]
    for index, (name, arguments) in enumerate(calls):
        call = {"index": index, "id": "call_" + _random_id(24), "type": "function",
                "function": {"name": name, "arguments": ""}}  # fmt: skip
        chunks.append(chunk({"tool_calls": [call]}))
        chunks += [chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]}) for p in _pieces(arguments)]
    finish = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls" if calls else "stop"}
    chunks.append({**head, "choices": [finish], "usage": None, "obfuscation": _obfuscation()})
    prompt, completion = tokens
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                           "rejected_prediction_tokens": 0}}  # fmt: skip
    chunks.append({**head, "choices": [], "usage": usage, "obfuscation": _obfuscation()})
    return b"".join(b"data: " + _compact(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _agent_messages(
    model: str, text: str | None, calls: list[tuple[str, str]], tokens: tuple[int, int], *, think: bool = False
) -> bytes:
    """Shaped as claude-sonnet-4-text-then-parallel-tool-use.sse (calls) and claude-sonnet-4-text-after-tool-result.sse
    (text): a `ping` after the first block opens, `tool_use` input streamed after an empty first piece."""
    prompt, completion = tokens
    usage: dict[str, Any] = {"input_tokens": prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    first_usage = {**usage, "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                   "output_tokens": 1, "service_tier": "standard", "inference_geo": "not_available"}  # fmt: skip
    message: dict[str, Any] = {"model": model, "id": "msg_01" + _random_id(22), "type": "message",
                               "role": "assistant", "content": [], "stop_reason": None, "stop_sequence": None,
                               "usage": first_usage}  # fmt: skip
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    blocks: list[list[dict[str, Any]]] = []
    if think:  # (as claude-sonnet-4-thinking: the thinking block, then its signature)
        blocks.append(
            [{"type": "content_block_start", "index": 0,
              "content_block": {"type": "thinking", "thinking": "", "signature": ""}}]
            + [{"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": word}}
               for word in _words("The tools will tell.")]
            + [{"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig-agent-" + _random_id(16)}}]
        )  # fmt: skip
    if text is not None:
        index = len(blocks)
        blocks.append(
            [{"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}]
            + [{"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": word}}
               for word in _words(text)]
        )  # fmt: skip
    for name, arguments in calls:
        index = len(blocks)
        block = {"type": "tool_use", "id": "toolu_01" + _random_id(22), "name": name, "input": {},
                 "caller": {"type": "direct"}}  # fmt: skip
        blocks.append(
            [{"type": "content_block_start", "index": index, "content_block": block}]
            + [{"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": p}} for p in ["", *_pieces(arguments)]]
        )  # fmt: skip
    for index, block_events in enumerate(blocks):
        events.append(block_events[0])
        if index == 0:
            events.append({"type": "ping"})
        events += block_events[1:]
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None},
                   "usage": {**usage, "output_tokens": completion}})  # fmt: skip
    events.append({"type": "message_stop"})
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), b'{"type": "ping"}' if e["type"] == "ping" else _compact(e))
        for e in events
    )


def _agent_responses(
    model: str, text: str | None, calls: list[tuple[str, str]], tokens: tuple[int, int], request: dict[str, Any]
) -> bytes:
    """Shaped as openai-gpt-4o-parallel-function-calls.sse (calls) and openai-gpt-4o-text.sse (text): the whole
    response object (the request's settings echoed), events' members in OpenAI's order."""
    hexdigits = "0123456789abcdef"
    created = int(time.time())
    response = {
        "id": "resp_" + _random_id(50, hexdigits), "object": "response", "created_at": created,
        "status": "in_progress", "background": False, "completed_at": None, "error": None,
        "frequency_penalty": request.get("frequency_penalty", 0.0), "incomplete_details": None,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"), "model": model, "moderation": None, "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "presence_penalty": request.get("presence_penalty", 0.0), "previous_response_id": None,
        "prompt_cache_key": None, "prompt_cache_retention": "in_memory",
        "reasoning": {"context": None, "effort": None, "summary": None, **(request.get("reasoning") or {})},
        "safety_identifier": None, "service_tier": "auto", "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **(request.get("text") or {})},
        "tool_choice": request.get("tool_choice", "auto"), "tools": request.get("tools") or [], "top_logprobs": 0,
        "top_p": request.get("top_p", 1.0), "truncation": "disabled", "usage": None, "user": None,
        "metadata": request.get("metadata") or {},
    }  # fmt: skip
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.in_progress", "response": response},
    ]
    output: list[dict[str, Any]] = []
    if text is not None:
        item = {"id": "msg_" + _random_id(50, hexdigits), "type": "message", "status": "in_progress", "content": [],
                "role": "assistant"}  # fmt: skip
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        done = {**item, "status": "completed", "content": [part]}
        at = {"item_id": item["id"], "output_index": 0}
        events += [
            {"type": "response.output_item.added", "item": item, "output_index": 0},
            {"type": "response.content_part.added", "content_index": 0, **at, "part": {**part, "text": ""}},
            *({"type": "response.output_text.delta", "content_index": 0, "delta": word, "item_id": item["id"],
               "logprobs": [], "obfuscation": _obfuscation(), "output_index": 0} for word in _words(text)),
            {"type": "response.output_text.done", "content_index": 0, "item_id": item["id"], "logprobs": [],
             "output_index": 0, "text": text},
            {"type": "response.content_part.done", "content_index": 0, **at, "part": part},
            {"type": "response.output_item.done", "item": done, "output_index": 0},
        ]  # fmt: skip
        output.append(done)
    for name, arguments in calls:
        index = len(output)
        item = {"id": "fc_" + _random_id(50, hexdigits), "type": "function_call", "status": "in_progress",
                "arguments": "", "call_id": "call_" + _random_id(24), "name": name}  # fmt: skip
        done = {**item, "status": "completed", "arguments": arguments}
        events += [
            {"type": "response.output_item.added", "item": item, "output_index": index},
            *({"type": "response.function_call_arguments.delta", "delta": p, "item_id": item["id"],
               "obfuscation": _obfuscation(), "output_index": index} for p in _pieces(arguments)),
            {"type": "response.function_call_arguments.done", "arguments": arguments, "item_id": item["id"],
             "output_index": index},
            {"type": "response.output_item.done", "item": done, "output_index": index},
        ]  # fmt: skip
        output.append(done)
    prompt, completion = tokens
    usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}  # fmt: skip
    final = {**response, "status": "completed", "completed_at": created, "output": output, "service_tier": "default",
             "usage": usage}  # fmt: skip
    events.append({"type": "response.completed", "response": final})
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), _compact(_sequenced(e, n))) for n, e in enumerate(events)
    )


def _sequenced(event: dict[str, Any], number: int) -> dict[str, Any]:
    """`sequence_number` where OpenAI puts it: last, or before `text` in `response.output_text.done`."""
    if event["type"] == "response.output_text.done":
        text = event["text"]
        return {**{k: v for k, v in event.items() if k != "text"}, "sequence_number": number, "text": text}
    return {**event, "sequence_number": number}


def _agent(path: str, request: dict[str, Any], model: str, size: int) -> bytes:
    """The `agent` model's answer to `request` (see the module docstring), in the dialect of `path`."""
    results, user_text, tools = _agent_turn(path, request)
    calls: list[tuple[str, str]] = []
    text: str | None
    if results is not None:
        text = "Results: " + "; ".join(f"{name}={result}" for name, result in results)
    else:
        directives, narrate = _directives(user_text)
        think = bool(directives) and re.search(r"\bthink\b", user_text) is not None
        for wanted, arguments in directives:
            name = wanted if wanted in tools else next((t for t in tools if t.endswith("_" + wanted)), wanted)
            calls.append((name, json.dumps(arguments)))
        text = ("Calling tools." if narrate else None) if calls else "No tools needed."
    said = len(text or "") + sum(len(name) + len(arguments) for name, arguments in calls)
    tokens = (max(1, size // 4), max(1, said // 4))
    if path.endswith("/messages"):
        return _agent_messages(model, text, calls, tokens, think=results is None and think)
    if path.endswith("/responses"):
        return _agent_responses(model, text, calls, tokens, request)
    return _agent_chat(model, text, calls, tokens)


WHOLE_MESSAGE = {
    "id": "msg_whole", "type": "message", "role": "assistant", "model": "claude",
    "content": [{"type": "thinking", "thinking": "Look it up.", "signature": "sig-whole"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_whole", "name": "get_weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "usage": {"input_tokens": 9, "output_tokens": 8},
}  # fmt: skip
WHOLE_RESPONSE = {
    "id": "resp_whole", "object": "response", "status": "completed", "model": "gpt",
    "output": [{"type": "reasoning", "id": "rs_whole", "summary": [{"type": "summary_text", "text": "Look it up."}],
                "encrypted_content": "blob-whole"},
               {"type": "message", "id": "msg_whole", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
               {"type": "function_call", "id": "fc_whole", "call_id": "call_whole", "name": "get_weather",
                "arguments": "{\"city\": \"Paris\"}", "status": "completed"}],
    "usage": {"input_tokens": 9, "output_tokens": 8, "total_tokens": 17},
}  # fmt: skip


def _completion_body(name: str) -> bytes:
    text = ""
    for line in (FIXTURES / f"{name}.sse").read_text().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    return json.dumps({
        "id": "chatcmpl-json", "object": "chat.completion", "created": 0, "model": name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }).encode()  # fmt: skip


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


def _head(status: int, headers: dict[str, str]) -> bytes:
    reason = {200: "OK", 429: "Too Many Requests"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_json(
    writer: asyncio.StreamWriter, status: int, body: bytes, extra: dict[str, str] | None = None
) -> None:
    headers = {"content-type": "application/json", "content-length": str(len(body)), **(extra or {})}
    writer.write(_head(status, headers) + body)
    await writer.drain()


async def _stream(writer: asyncio.StreamWriter, raw: bytes, options: dict[str, float], record: dict[str, Any]) -> bool:
    """Send `raw` as a chunked SSE body; returns False when the connection must be closed."""
    writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
    size = int(options.get("chunk", 0))
    pieces = [raw[i : i + size] for i in range(0, len(raw), size)] if size else _events(raw)
    drip = options.get("drip", 0.0)
    drop = options.get("drop")
    stall_after = options.get("stall_after")
    sent = 0
    for piece in pieces:
        if drop is not None and sent + len(piece) > drop:
            piece = piece[: int(drop) - sent]
            if piece:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            return False
        if stall_after is not None and sent + len(piece) > stall_after:
            await asyncio.sleep(3600)
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        try:
            await writer.drain()
        except ConnectionError:
            record["closed_early"] = True
            return False
        sent += len(piece)
        if drip:
            await asyncio.sleep(drip)
            if writer.transport.is_closing() or writer.is_closing():
                record["closed_early"] = True
                return False
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def _watch_close(reader: asyncio.StreamReader, record: dict[str, Any]) -> None:
    """Marks the record when the client closes the connection while the answer is still going.

    It looks without reading: a read here would still be waiting on the reader (cancelled, not yet unwound) when the
    connection's next request is read, which asyncio refuses, and it would eat that request's first byte; either
    broke a kept-alive connection's next request (as a client's tool loop sends it, right after an answer)."""
    while not reader.at_eof() and reader.exception() is None:
        await asyncio.sleep(0.02)
    record["closed_early"] = True


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes,
                  headers: dict[str, str]) -> bool:  # fmt: skip
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    record: dict[str, Any] = {"path": path, "headers": headers, "body": request, "closed_early": False}
    received.append(record)
    model = str((request or {}).get("model", ""))
    name, options = _options(model)
    watcher = asyncio.create_task(_watch_close(reader, record))
    try:
        failing = False
        if options.get("fail") or options.get("fail_from") or options.get("slow_from"):
            seen = failures.get(model, 0)
            failing = seen < options.get("fail", 0) or 0 < options.get("fail_from", 0) <= seen + 1
            failures[model] = seen + 1
            if seen + 1 < options.get("slow_from", 0):  # (an earlier request: not slow)
                options.pop("delay", None)
                options.pop("drip", None)
        if options.get("delay"):
            await asyncio.sleep(options["delay"])
        if name.startswith("status:") or failing:
            status = int(name.split(":", 1)[1]) if not failing else int(options.get("fail_status", 503))
            error = {"error": {"message": f"failure with {SECRET}", "type": "server_error", "code": SECRET}}
            extra = {"retry-after": f"{options.get('retry_after', 7):g}"} if status == 429 else {}
            await _send_json(writer, status, json.dumps(error).encode(), extra)
            return True
        if options.get("reject_blobs") and re.search(rb'"(encrypted_content|signature)":\s*"|redacted_thinking', body):
            if path.endswith("/messages"):
                message = "messages.1.content.0: Invalid `signature` in `thinking` block"
                refusal = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
            else:
                message = "The encrypted content for item rs_1 could not be verified."
                refusal = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": "invalid_encrypted_content"}}  # fmt: skip
            await _send_json(writer, 400, json.dumps(refusal).encode())
            return True
        if name == "error_first":
            if path.endswith("/messages"):
                start = {"type": "message_start", "message": {"id": "msg_e", "type": "message", "role": "assistant",
                                                              "model": "m", "content": [], "usage": {}}}  # fmt: skip
                error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                raw = b"event: message_start\ndata: %s\n\nevent: error\ndata: %s\n\n" % (
                    json.dumps(start).encode(),
                    json.dumps(error).encode(),
                )
            elif path.endswith("/responses"):
                error = {"type": "error", "code": "server_error", "message": "overloaded", "param": None,
                         "sequence_number": 0}  # fmt: skip
                raw = b"event: error\ndata: %s\n\n" % json.dumps(error).encode()
            else:
                error = {"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}}
                raw = b"data: %s\n\n" % json.dumps(error).encode()
            return await _stream(writer, raw, options, record)
        if name == "hang":
            await asyncio.sleep(3600)
        if name == "stall":
            writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
            await writer.drain()
            await asyncio.sleep(3600)
        if name == "echo_key":
            key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
            text = f"invalid credentials: {key} (sent as {headers.get('authorization') or key})"
            if path.endswith("/messages"):
                error = {"type": "error", "error": {"type": "authentication_error", "message": text}}
                start = {"type": "message_start", "message": {"id": "msg_e", "type": "message", "role": "assistant",
                                                              "model": "m", "content": [], "usage": {}}}  # fmt: skip
                raw = b"event: message_start\ndata: %s\n\nevent: error\ndata: %s\n\n" % (
                    json.dumps(start).encode(),
                    json.dumps(error).encode(),
                )
            elif path.endswith("/responses"):
                error = {"type": "error", "code": key, "message": text, "param": None, "sequence_number": 0}
                raw = b"event: error\ndata: %s\n\n" % json.dumps(error).encode()
            else:
                error = {"error": {"message": text, "type": "invalid_request_error", "code": key}}
                raw = b"data: %s\n\n" % json.dumps(error).encode()
            cut = raw.index(key.encode()) + len(key) // 2
            writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
            for piece in (raw[:cut], raw[cut:]):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if name == "keepalives":
            writer.write(_head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
            beats = [b": ping\n\n", b"\n", b": OPENROUTER PROCESSING\n\n"]
            if path.endswith("/messages"):
                beats.append(b'event: ping\ndata: {"type": "ping"}\n\n')
            for k in range(100_000):
                beat = beats[k % len(beats)]
                writer.write(b"%x\r\n%s\r\n" % (len(beat), beat))
                await writer.drain()
                await asyncio.sleep(0.2)
        if name.startswith("json:"):
            if path.endswith(("/messages", "/responses")):
                whole = WHOLE_MESSAGE if path.endswith("/messages") else WHOLE_RESPONSE
                await _send_json(writer, 200, json.dumps(whole).encode())
            else:
                await _send_json(writer, 200, _completion_body(name.split(":", 1)[1]))
            return True
        messages = path.endswith("/messages")
        responses = path.endswith("/responses")
        if name.startswith("fixture:"):
            folder = ANTHROPIC if messages else RESPONSES if responses else FIXTURES
            raw = (folder / f"{name.split(':', 1)[1]}.sse").read_bytes()
        elif name == "agent":
            raw = _agent(path, request if isinstance(request, dict) else {}, name, len(body))
        else:
            generated = _generated_messages if messages else _generated_responses if responses else _generated
            raw = generated(name, request if isinstance(request, dict) else {})
        ping = b'event: ping\ndata: {"type": "ping"}\n\n' if messages else b": ping\n\n"  # (Responses: comments)
        raw = ping * int(options.get("pings", 0)) + raw
        if options.get("crlf"):
            raw = raw.replace(b"\n", b"\r\n")
        return await _stream(writer, raw, options, record)
    finally:
        watcher.cancel()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            parsed = await _read_request(reader)
            if parsed is None:
                break
            method, path, headers, body = parsed
            if path == "/requests":
                if method == "DELETE":
                    received.clear()
                    failures.clear()
                await _send_json(writer, 200, json.dumps(received).encode())
                continue
            if method == "POST" and path.endswith(("/chat/completions", "/messages", "/responses")):
                if not await _answer(reader, writer, path, body, headers):
                    break
                continue
            await _send_json(writer, 404, b'{"error": {"message": "not found"}}')
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()

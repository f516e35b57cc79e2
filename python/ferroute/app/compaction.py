"""`POST /v1/responses/compact`: the router compacts a conversation itself, on the routed model.

The conversation (`input`, after the chain of `previous_response_id` and whatever `input` refers to, as for
`POST /v1/responses`) is written out as a transcript and sent, non-streamed and stored nowhere, through the same
pipeline as any response (`App.respond`) with instructions to summarise what an agent needs to go on. The answer is
`{"id", "object": "response.compaction", "created_at", "output", "usage"}`: `output` is the latest user turn in the
clear, then a `compaction` item whose `encrypted_content` is the summary sealed with the router's key, bound to the
tenant (`ReasoningCipher.seal_compaction`). Sent back as input, that item opens to the summary for any upstream
(`Continuation.open_compaction`). Nothing here is on the streaming path.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ferroute import _core
from ferroute._types import Message, Receive, Send
from ferroute.app.http import send_json
from ferroute.errors import RouterError, invalid_request, upstream_failed
from ferroute.models import MessageItem, validate_request

if TYPE_CHECKING:
    from ferroute.app.asgi import App

# What the compaction request may hold. Other fields (Codex sends `tools`, `reasoning`, `text`…) are accepted and
# not used: the summarising call needs none of them.
FIELDS = ("model", "input", "previous_response_id", "instructions")

PROMPT = """You compact the history of a conversation between a user and an AI agent so that the agent can go on \
working from your summary alone, without the history. Write a complete, factual state summary in plain text with \
these sections:
- Goals: what the user wants, with their requirements and constraints, in their words where it matters.
- Decisions: what was decided or agreed, and why.
- Done: the work completed so far and its results.
- Open tasks: what remains to be done, and the next step.
- Files and tools: the files, paths, commands, URLs and identifiers involved and their current state; the tool calls \
made (name, key arguments, call ids) and what their results said, errors included.
Keep exact names, numbers, ids, code words and quotes. Do not invent anything, do not answer the user, and do not \
continue the task: only summarise."""


def transcript(items: list[Any], instructions: str | None) -> str:
    """The conversation as text the summarising model reads: one block per item, tool calls and results included."""
    blocks: list[str] = []
    if instructions:
        blocks.append(f"[the agent's instructions]\n{instructions}")
    for item in items:
        data = item.model_dump(mode="json", exclude_none=True) if hasattr(item, "model_dump") else dict(item)
        kind = data.get("type", "message")
        if kind == "message":
            blocks.append(f"[{data.get('role', 'user')}]\n{_text(data.get('content'))}")
        elif kind == "function_call":
            blocks.append(f"[tool call {data.get('name')} (call_id {data.get('call_id')})]\n{data.get('arguments')}")
        elif kind == "function_call_output":
            blocks.append(f"[tool result (call_id {data.get('call_id')})]\n{_text(data.get('output'))}")
        elif kind == "reasoning":
            summary = _text(data.get("summary")) or _text(data.get("content"))
            if summary:
                blocks.append(f"[assistant's reasoning]\n{summary}")
        else:  # hosted tools' items (MCP calls, sub-agents…): their fields as they are
            fields = {k: v for k, v in data.items() if k not in ("id", "type", "status") and v not in (None, "", [])}
            blocks.append(f"[{kind}]\n{json.dumps(fields, ensure_ascii=False)}")
    return "\n\n".join(blocks)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if "text" in part:
            texts.append(str(part["text"]))
        elif "refusal" in part:
            texts.append(f"(refused) {part['refusal']}")
        else:
            texts.append(f"({part.get('type', 'part')}{': ' + part['filename'] if part.get('filename') else ''})")
    return "\n".join(texts)


def last_user_turn(items: list[Any]) -> list[MessageItem]:
    """The latest user turn: the last run of consecutive user messages in the conversation."""
    turn: list[MessageItem] = []
    for item in reversed(items):
        if isinstance(item, MessageItem) and item.role == "user":
            turn.append(item)
        elif turn:
            break
    return turn[::-1]


def as_output(item: MessageItem) -> dict[str, Any]:
    content = item.content
    if isinstance(content, str):
        parts: list[Any] = [{"type": "input_text", "text": content}]
    else:
        parts = [part.model_dump(mode="json", exclude_none=True) for part in content]
    return {"id": item.id or _core.new_id("msg"), "type": "message", "status": "completed", "role": "user",
            "content": parts}  # fmt: skip


async def compact(
    app: App,
    data: dict[str, Any],
    tenant: str,
    send: Send,
    receive: Receive,
    log: dict[str, Any],
    began: float,
    used: list[int] | None = None,
) -> int:
    """Answer a compaction request (`data`: its JSON object) on `send`; the tokens the summarising call used (input
    and output, as its upstream reported them) are appended to `used`, answered or not, for the key's limit."""
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("model is required: the model that compacts the conversation", "model")
    if data.get("input") is None and data.get("previous_response_id") is None:
        raise invalid_request("nothing to compact: send input, previous_response_id, or both", "input")
    fields = {name: data[name] for name in FIELDS if data.get(name) is not None}
    request, _ = validate_request({**fields, "store": False}, max_input_items=app.settings.limits.max_input_items)
    log["model"] = model
    # The conversation as the upstream would see it: the chain, references, sealed reasoning and compactions opened.
    resolved, _, _ = await app.continuation.prepare(request, tenant, False)
    items = resolved.items()
    summarising = {
        "model": model,
        "instructions": PROMPT,
        "input": [{"role": "user", "content": transcript(items, request.instructions)}],
        "store": False,
        "stream": False,
    }
    summary_request, echoed = validate_request(summarising, max_input_items=app.settings.limits.max_input_items)

    status = 0
    start: Message = {}
    body = bytearray()

    async def capture(message: Message) -> None:
        nonlocal status, start
        if message["type"] == "http.response.start":
            status, start = message["status"], message
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    inner: dict[str, Any] = {"key": log.get("key", "")}  # (its usage is counted for the caller's key)
    await app.respond(summary_request, echoed, tenant, capture, receive, inner, began)
    log["provider"] = inner.get("provider")
    if status != 200:  # the upstream's error, as `POST /v1/responses` would answer it
        await send(start)
        await send({"type": "http.response.body", "body": bytes(body)})
        return status
    response = json.loads(body)
    usage = response.get("usage")
    if used is not None and isinstance(usage, dict):
        used.append(int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0))
    if response.get("status") not in ("completed", "incomplete"):
        error = response.get("error") or {}
        raise upstream_failed(error.get("message"), error.get("code"))
    summary = "\n".join(
        part.get("text", "")
        for item in response.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    ).strip()
    if not summary:
        raise RouterError(502, f"{model!r} answered no summary", type="model_error", code="upstream_error")
    output = [as_output(item) for item in last_user_turn(items)]
    output.append(
        {
            "id": _core.new_id("cmp"),
            "type": "compaction",
            "encrypted_content": app.cipher.seal_compaction(tenant, summary),
        }
    )
    result = {
        "id": response.get("id") or _core.new_id("resp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": output,
        "usage": response.get("usage"),
    }
    return await send_json(send, 200, json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode())

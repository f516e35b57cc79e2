"""The Python the Rust writer replaced (reasoning items rewritten in stream frames; whole upstream bodies made
their dialect's stream), kept as the independent readings its tests compare with."""

from __future__ import annotations

import json
from typing import Any

from ferroute.app.reasoning import Change, change_all

_ITEM_DONE = b"event: response.output_item.done\n"
_TERMINAL = (b"event: response.completed\n", b"event: response.incomplete\n", b"event: response.failed\n")


def frames(out: bytes, change: Change) -> bytes:
    """Stream frames with `change` applied to reasoning items (`output_item.done` and the terminal event's)."""
    if _ITEM_DONE not in out and not any(t in out for t in _TERMINAL):
        return out
    parts = out.split(b"\n\n")
    for k, frame in enumerate(parts):
        item_done = frame.startswith(_ITEM_DONE) and b'"type":"reasoning"' in frame
        if not item_done and not frame.startswith(_TERMINAL):
            continue
        head, sep, data = frame.partition(b"\ndata: ")
        event = json.loads(data)
        if item_done:
            changed = change(event.get("item"))
        else:
            changed = change_all((event.get("response") or {}).get("output"), change)
        if changed:
            parts[k] = head + sep + json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    return b"\n\n".join(parts)


# --- whole bodies as their dialect's stream: what the app fed the translator before `feed_whole` -----------


def chat_completions_as_stream(body: bytes) -> bytes:
    """The `chat.completion` as one chunk (`message` read as `delta`)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return b"data: {malformed upstream body}\n\n"
    for choice in data.get("choices") or []:
        if isinstance(choice, dict) and "message" in choice:
            choice["delta"] = choice.pop("message")
    return b"data: " + json.dumps(data).encode() + b"\n\ndata: [DONE]\n\n"


def anthropic_as_stream(body: bytes) -> bytes:
    """A whole Messages body as its stream: each block whole in its `content_block_start`, then the end."""
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get("type") != "message":
        return b"data: {malformed upstream body}\n\n"
    usage = message.get("usage") or {}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {**message, "content": []}}]
    for index, block in enumerate(message.get("content") or []):
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": message.get("stop_reason")}, "usage": usage})
    events.append({"type": "message_stop"})
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)


def responses_as_stream(body: bytes) -> bytes:
    """A whole response object as its stream: each item added, its text as one delta a part, done; then the
    terminal event."""
    try:
        response = json.loads(body)
    except ValueError:
        response = None
    if not isinstance(response, dict) or response.get("object") != "response":
        return b"data: {malformed upstream body}\n\n"
    events: list[dict[str, Any]] = []
    for index, item in enumerate(response.get("output") or []):
        if not isinstance(item, dict):
            continue
        where = {"output_index": index, "item_id": item.get("id")}
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        if item.get("type") == "message":
            for part in item.get("content") or []:
                kind = "refusal" if part.get("type") == "refusal" else "output_text"
                text = part.get("refusal" if kind == "refusal" else "text") or ""
                events.append({"type": f"response.{kind}.delta", **where, "delta": text})
        elif item.get("type") == "reasoning":
            for part in item.get("summary") or []:
                events.append({"type": "response.reasoning_summary_part.added", **where})
                events.append({"type": "response.reasoning_summary_text.delta", **where, "delta": part.get("text")})
            events.extend(
                {"type": "response.reasoning_text.delta", **where, "delta": part.get("text")}
                for part in item.get("content") or []
            )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    status = str(response.get("status"))
    terminal = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(status, "response.completed")
    events.append({"type": terminal, "response": response})
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in events)

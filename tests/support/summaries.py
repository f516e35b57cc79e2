"""Reference readings of a translated response's output items, shared by the translator and router tests."""

from __future__ import annotations

import json
from typing import Any


def anthropic_summary(output: list[dict[str, Any]]) -> list[Any]:
    """(kind, text…) of each output item, as the Anthropic translator tests compare them."""
    items: list[Any] = []
    for item in output:
        if item["type"] == "message":
            items.append(("message", "".join(part["text"] for part in item["content"])))
        elif item["type"] == "reasoning":
            text = "".join(part["text"] for part in item.get("content") or [])
            items.append(("reasoning", text, item.get("encrypted_content") or ""))
        elif item["type"] == "function_call":
            items.append(("function_call", item["call_id"], item["name"], json.loads(item["arguments"])))
    return items


def responses_summary(output: list[dict[str, Any]]) -> list[Any]:
    """(kind, summary, text…) of each output item, as the Responses translator tests compare them."""
    items: list[Any] = []
    for item in output:
        if item["type"] == "message":
            items.append(("message", "".join(p.get("text") or p.get("refusal") or "" for p in item["content"])))
        elif item["type"] == "reasoning":
            summary = [p["text"] for p in item.get("summary") or []]
            text = "".join(p["text"] for p in item.get("content") or [])
            # (Whether it has encrypted_content: OpenAI encrypts anew for each event that carries the item.)
            items.append(("reasoning", summary, text, bool(item.get("encrypted_content"))))
        elif item["type"] == "function_call":
            items.append(("function_call", item["call_id"], item["name"], json.loads(item["arguments"] or "{}")))
    return items

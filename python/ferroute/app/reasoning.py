"""What a client sees of a stored response's reasoning items: an upstream's own `encrypted_content` (Anthropic's
thinking signatures, OpenAI's blobs) is kept in the store for later turns but not shown by `GET`, `input_items` or
`cancel`. (Streams and new responses get this from the Rust writer's reasoning policy; this is for records read
back from the store.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Change = Callable[[Any], bool]


def response_body(body: bytes, change: Change) -> bytes:
    """A response object with `change` applied to its reasoning items."""
    data = json.loads(body)
    if change_all(data.get("output"), change):
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return body


def change_all(items: Any, change: Change) -> bool:
    """`change` applied to every item (not only up to the first that changes); whether any changed."""
    changed = False
    for item in items or []:
        changed |= change(item)
    return changed


def strip_encrypted(item: Any) -> bool:
    if isinstance(item, dict) and item.get("type") == "reasoning" and item.get("encrypted_content") is not None:
        item["encrypted_content"] = None
        return True
    return False

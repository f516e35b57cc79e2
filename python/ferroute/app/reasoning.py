"""Reasoning items' `encrypted_content` as a client sees it: sealed by the router (the client asked with
`include`), or taken out (an upstream's own, such as Anthropic's thinking signatures, kept in the store for later
turns but not shown).

These rewrite the few frames that carry a whole reasoning item (its `output_item.done` and the terminal event)
and whole response objects; every other frame passes untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ferroute.store.crypto import ReasoningCipher, seal_item

_ITEM_DONE = b"event: response.output_item.done\n"
_TERMINAL = (b"event: response.completed\n", b"event: response.incomplete\n", b"event: response.failed\n")

Change = Callable[[Any], bool]


def sealing(cipher: ReasoningCipher, tenant: str) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    """(on stream frames, on a whole response object): each reasoning item's content sealed for `tenant`."""
    cache: dict[str, str] = {}  # (an item's `output_item.done` and the terminal event carry the same blob)
    return (
        lambda out: frames(out, lambda item: seal_item(cipher, tenant, item, cache)),
        lambda body: response_body(body, lambda item: seal_item(cipher, tenant, item, {})),
    )


def stripping() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    """(on stream frames, on a whole response object): each reasoning item's `encrypted_content` made null."""
    return (lambda out: frames(out, strip_encrypted), lambda body: response_body(body, strip_encrypted))


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
            changed = _change_all((event.get("response") or {}).get("output"), change)
        if changed:
            parts[k] = head + sep + json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    return b"\n\n".join(parts)


def response_body(body: bytes, change: Change) -> bytes:
    """A response object with `change` applied to its reasoning items."""
    data = json.loads(body)
    if _change_all(data.get("output"), change):
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return body


def _change_all(items: Any, change: Change) -> bool:
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

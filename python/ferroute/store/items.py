"""Items as the store keeps them, and the context a continuation rebuilds from them.

Input items are stored as JSON dicts, each with an id (`msg_`/`fc_`/`fco_`/`rs_` + 48 hex chars when
the client sent none), so `input_items` can list them and `item_reference` can find them. Output
item ids are read from the response bytes with a pattern (no JSON round trip on the write path):
inside a JSON string a `"` is always escaped, so `"id":"msg_…"` can only be a key of an object.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ferroute.errors import RouterError
from ferroute.models import InputItem, MessageItem
from ferroute.store import Record

_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
_OUTPUT_IDS = re.compile(rb'"id":"((?:msg|rs|fc)_[0-9a-f]{48})"')
# Output item types a later turn passes back (slug-prefixed extension items are not model context).
_CONTEXT_TYPES = {"message", "function_call", "function_call_output", "reasoning"}
_ITEMS: TypeAdapter[list[Any]] = TypeAdapter(list[InputItem])


# Random bytes for ids, read from the OS 4 KiB at a time: `secrets.token_hex` is a `getrandom` system call
# per id (4% of the app's CPU per non-streaming request, py-spy). Emptied in a forked child (Granian forks
# its workers), which must not hand out the ids its parent's buffer still holds.
_random = bytearray()
_random_lock = threading.Lock()  # (two threads taking ids at once must not take the same bytes)


def _forget_random() -> None:
    global _random_lock
    _random.clear()
    _random_lock = threading.Lock()  # (a lock held at the fork stays held in the child)


if hasattr(os, "register_at_fork"):  # (POSIX; where there is no fork there is nothing to forget)
    os.register_at_fork(after_in_child=_forget_random)


def new_id(kind: str) -> str:
    """`<prefix>_` + 48 hex characters: the time in milliseconds (12) and 18 bytes from the OS's CSPRNG (36),
    made as the Rust core makes its ids (`rust/src/events/ids.rs`: why the time comes first)."""
    with _random_lock:
        if len(_random) < 18:
            _random[:] = os.urandom(4096)
        token = _random[-18:].hex()
        del _random[-18:]
    return f"{_PREFIX.get(kind, 'item')}_{time.time_ns() // 1_000_000:012x}{token}"


def normalize(item: Any) -> dict[str, Any]:
    """An input item model → the dict the store keeps (with an id; string content as parts)."""
    data: dict[str, Any] = item.model_dump(mode="json", exclude_none=True, by_alias=True)
    if isinstance(item, MessageItem):
        data["type"] = "message"
        if isinstance(item.content, str):
            if item.role == "assistant":
                data["content"] = [{"type": "output_text", "text": item.content, "annotations": []}]
            else:
                data["content"] = [{"type": "input_text", "text": item.content}]
        data.setdefault("status", "completed")
    if not data.get("id"):
        data["id"] = new_id(data["type"])
    return data


def output_ids(response: bytes) -> list[str]:
    return [m.decode() for m in _OUTPUT_IDS.findall(response)]


def record_items(record: Record) -> list[dict[str, Any]]:
    """A record's input items followed by its output items (the turn as the next one sees it)."""
    items: list[dict[str, Any]] = json.loads(record.input_items)
    output = json.loads(record.response).get("output") or []
    items += [item for item in output if isinstance(item, dict) and item.get("type") in _CONTEXT_TYPES]
    return items


def find_in(record: Record, item_id: str) -> dict[str, Any] | None:
    for item in record_items(record):
        if item.get("id") == item_id:
            return item
    return None


def to_models(items: Iterable[dict[str, Any]]) -> list[Any]:
    """Stored dicts → input item models (what the providers read)."""
    try:
        return _ITEMS.validate_python(list(items))
    except ValidationError as e:
        raise RouterError(
            500, f"a stored item cannot be read back: {e.errors()[0]['msg']}", type="server_error", code="store_corrupt"
        ) from None


__all__ = ["find_in", "new_id", "normalize", "output_ids", "record_items", "to_models"]

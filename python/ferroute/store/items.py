"""Items as the store keeps them, and the context a continuation rebuilds from them.

Input items are stored as JSON dicts, each with an id, so `input_items` can list them and
`item_reference` can find them. The ids ferroute gives items carry their response's id: `msg_`/`fc_`/
`fco_`/`rs_` + the response id's 48 hex characters + the item's number in 4 more (output items count
from 0, as the Rust core numbers them, `rust/core/src/events/ids.rs`; input items from `OUTPUT_ITEMS`). So
`response_of` finds the response holding such an item without a store index, and a store indexes only
the ids it could not derive (`to_index`: ids the client gave): the items table was more than half of
the SQLite writer's pages per stored response. Output item ids are read from the response bytes with a
pattern where needed (no JSON round trip): inside a JSON string a `"` is always escaped, so
`"id":"msg_…"` can only be a key of an object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ferroute import _core
from ferroute.errors import RouterError
from ferroute.models import InputItem, MessageItem
from ferroute.store import Record

_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
_OUTPUT_IDS = re.compile(rb'"id":"((?:msg|rs|fc)_[0-9a-f]{48}(?:[0-9a-f]{4})?)"')
_RESPONSE_ID = re.compile(r"resp_[0-9a-f]{48}")
_DERIVED = re.compile(r"(?:msg|rs|fc|fco)_([0-9a-f]{48})[0-9a-f]{4}")
OUTPUT_ITEMS: int = _core.OUTPUT_ITEMS  # item numbers below are output items' (the Rust core numbers those)
# Output item types a later turn passes back: the model's, and the hosted tools' receipts (`ferroute.tools` lowers
# them to what each upstream reads). Other slug-prefixed extension items are not model context.
_CONTEXT_TYPES = {
    "message", "function_call", "function_call_output", "reasoning",
    "mcp_list_tools", "mcp_call", "mcp_approval_request",
    "ferroute:mcp_list_tools", "ferroute:mcp_call", "ferroute:mcp_approval_request", "ferroute:agent_call",
}  # fmt: skip
_ITEMS: TypeAdapter[list[Any]] = TypeAdapter(list[InputItem])


def new_id(kind: str) -> str:
    """`<prefix>_` + 48 hex characters: the time in milliseconds (12) and 18 bytes from the OS's CSPRNG (36),
    made by the Rust core (`rust/core/src/events/ids.rs`: why the time comes first)."""
    return _core.new_id(_PREFIX.get(kind, "item"))


def item_id(kind: str, response_id: str, number: int) -> str:
    """The id of item `number` of a response (see the module's doc); a response id of another shape (given by
    a caller) or a number past 4 hex digits gets a `new_id`."""
    if 0 <= number < OUTPUT_ITEMS:  # an output item: as the core names it
        return _core.item_id(_PREFIX.get(kind, "item"), response_id, number)
    # Input items take the numbers the core leaves them (it gives no output item one of these).
    if number > 0xFFFF or not derives_items(response_id):
        return new_id(kind)
    return f"{_PREFIX.get(kind, 'item')}_{response_id[5:]}{number:04x}"


def response_of(item_id: str) -> str | None:
    """The response an item id was made for (`item_id`), or None for any other id."""
    match = _DERIVED.fullmatch(item_id)
    return f"resp_{match[1]}" if match else None


def derives_items(response_id: str) -> bool:
    """Whether the items of this response get ids made from its id (`item_id`): ids ferroute makes do."""
    return _RESPONSE_ID.fullmatch(response_id) is not None


def to_index(item_ids: Iterable[str], response_id: str) -> list[str]:
    """The ids a store must map to `response_id` for `item_reference`: all but those made for it."""
    return [i for i in item_ids if response_of(i) != response_id]


def normalize(item: Any, response_id: str = "", number: int = OUTPUT_ITEMS) -> dict[str, Any]:
    """An input item model → the dict the store keeps (with an id, made as item `number` of `response_id` when
    it has none; string content as parts)."""
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
        data["id"] = item_id(data["type"], response_id, number)
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


__all__ = [
    "OUTPUT_ITEMS",
    "derives_items",
    "find_in",
    "item_id",
    "new_id",
    "normalize",
    "output_ids",
    "record_items",
    "response_of",
    "to_index",
    "to_models",
]

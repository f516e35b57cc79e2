"""The stored-response endpoints: `GET`/`DELETE /v1/responses/{id}`, `GET …/input_items` and `POST …/cancel`, each
for the caller's tenant only (another key gets the same 404 as a missing id)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from ferroute._types import Scope, Send
from ferroute.app.background import Background
from ferroute.app.http import send_json
from ferroute.app.reasoning import response_body, strip_encrypted
from ferroute.app.records import Records
from ferroute.errors import invalid_request, method_not_allowed, no_route, not_found
from ferroute.store import Record, StoreError

_ALLOWED = {"": ("GET", "DELETE"), "input_items": ("GET",), "cancel": ("POST",)}


class StoredEndpoints:
    def __init__(self, records: Records, background: Background) -> None:
        self.records = records
        self.background = background

    async def __call__(self, scope: Scope, send: Send, method: str, tail: str, tenant: str) -> int:
        """`tail`: the path after `/v1/responses/`."""
        response_id, _, action = tail.partition("/")
        if not response_id or action not in _ALLOWED:
            raise no_route(method, f"/v1/responses/{tail}")
        allowed = _ALLOWED[action]
        if method not in allowed:
            raise method_not_allowed(f"{' or '.join(allowed)} here")
        if action == "" and method == "DELETE":
            return await self._delete(send, tenant, response_id)
        record = await self.records.get(tenant, response_id)
        if action == "" and b"stream=" in scope.get("query_string", b""):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if query.get("stream", [""])[-1].lower() == "true":
                return await self._stream(send, tenant, record, query)
        if action == "input_items":
            return await send_json(send, 200, input_items_page(record, scope.get("query_string", b"")))
        body = record.response if action == "" else await self.background.cancel(tenant, record)
        if b'"encrypted_content":"' in body:  # (an upstream's own, e.g. Anthropic's signatures: kept, not shown)
            body = response_body(body, strip_encrypted)
        return await send_json(send, 200, body)

    async def _stream(self, send: Send, tenant: str, record: Record, query: dict[str, list[str]]) -> int:
        """`GET /v1/responses/{id}?stream=true[&starting_after=N]`: a streamed background response's events after
        sequence number N (all of them without it), then live until it ends: from the log of the worker that runs
        it, or from the store."""
        raw = query.get("starting_after", [None])[-1]
        try:
            after = int(raw) if raw is not None else -1
        except ValueError:
            after = -2
        if after < -1:
            raise invalid_request("starting_after must be a sequence_number (an integer, 0 or more)", "starting_after")
        if not json.loads(record.settings or b"{}").get("events"):
            raise invalid_request(
                f"response {record.id!r} has no events to stream: only a response created with background and "
                "stream true keeps them",
                "stream",
            )
        log = self.background.logs.get(record.id)
        job = self.background.jobs.get(record.id)
        if log is not None and job is not None and job.tenant == tenant:
            return await self.background.follow_log(send, log, after)
        return await self.background.follow_store(send, tenant, record, after)

    async def _delete(self, send: Send, tenant: str, response_id: str) -> int:
        try:
            deleted = await self.records.store.delete(tenant, response_id)
        except StoreError as e:
            raise self.records.down("delete", e) from None
        if not deleted:
            raise not_found("response", response_id)
        self.background.forget(tenant, response_id)
        body = json.dumps({"id": response_id, "object": "response.deleted", "deleted": True}).encode()
        return await send_json(send, 200, body)


def input_items_page(record: Record, query_string: bytes) -> bytes:
    """One page of a stored response's input items (`limit`, `order`, `after`), as the list object."""
    query = parse_qs(query_string.decode("latin-1"))
    raw_limit = query.get("limit", ["20"])[-1]
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise invalid_request("limit must be an integer from 1 to 100", "limit")
    order = query.get("order", ["desc"])[-1]
    if order not in ("asc", "desc"):
        raise invalid_request("order must be asc or desc", "order")
    items: list[dict[str, Any]] = json.loads(record.input_items)
    if order == "desc":
        items.reverse()
    after = query.get("after", [None])[-1]
    if after is not None:
        position = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if position is None:
            raise invalid_request(f"after: no input item {after!r} in this response", "after")
        items = items[position + 1 :]
    page = items[:limit]
    for item in page:  # (reasoning items keep an upstream's own encrypted_content for later turns: not shown)
        strip_encrypted(item)
    body = {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
    return json.dumps(body, ensure_ascii=False).encode()

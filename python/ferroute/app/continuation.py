"""Continuation: what the upstream gets for a request that builds on stored state (`previous_response_id`,
`item_reference`, reasoning the router sealed, compaction items), and the record a stored response will be written
to. Everything that can fail here fails before anything goes upstream.

A chain continues from a response that has ended, whatever its status: `completed`, `incomplete`, `failed` (its
stored items, the output it had), `cancelled`, and `failed` because its worker died (`interrupted`: its input and
whatever output was stored, as for any failed response). One still running (a stream in flight, a background
response, on any worker: its record is written when it is created) is a 400 naming `previous_response_id`: its
output is not known yet, and the upstream would get a conversation with a hole in it."""

from __future__ import annotations

import json
from typing import Any

import pydantic_core

from ferroute.app.heartbeat import is_running
from ferroute.app.records import Records
from ferroute.config import LimitsConfig
from ferroute.errors import RouterError, invalid_request, not_found
from ferroute.models import CompactionItem, ItemReference, MessageItem, ReasoningItem, ResponsesRequest
from ferroute.routing.reasoning import origins_of
from ferroute.store import Record, StoreError
from ferroute.store.crypto import ReasoningCipher, SealError
from ferroute.store.items import find_in, record_items, response_of, to_models


class Continuation:
    def __init__(self, records: Records, cipher: ReasoningCipher, limits: LimitsConfig) -> None:
        self.records = records
        self.cipher = cipher
        self.limits = limits

    async def prepare(
        self, request: ResponsesRequest, tenant: str, store: bool
    ) -> tuple[ResponsesRequest, Record | None, list[Any] | None]:
        """The request the upstream gets (earlier turns, references and sealed reasoning resolved), the record to
        store (None with `store` false) and the input items it will hold (see `records.fill_input`)."""
        items = request.items()
        special = request.previous_response_id is not None or any(
            isinstance(item, (ItemReference, CompactionItem))
            or (isinstance(item, ReasoningItem) and item.encrypted_content)
            for item in items
        )
        if not special and not store:
            return request, None, None
        resolved: list[Any] = []
        for i, item in enumerate(items):
            if isinstance(item, ItemReference):
                resolved.append(await self._reference(tenant, item.id, f"input[{i}].id"))
            elif isinstance(item, ReasoningItem) and item.encrypted_content:
                resolved.append(self._open_reasoning(tenant, item, f"input[{i}].encrypted_content"))
            elif isinstance(item, CompactionItem):
                resolved.append(self.open_compaction(tenant, item, f"input[{i}].encrypted_content"))
            else:
                resolved.append(item)
        ancestors: list[str] = []
        upstream = request
        previous_target = None
        if special:
            context: list[Any] = []
            if request.previous_response_id is not None:
                chain = await self._chain(tenant, request.previous_response_id)
                per_record = [record_items(record) for record in chain]
                stored_items = [item for items in per_record for item in items]
                limit = self.limits.max_input_items
                if len(stored_items) + len(resolved) > limit:
                    raise invalid_request(
                        f"the conversation has {len(stored_items) + len(resolved)} items with its earlier turns; the "
                        f"limit is {limit} (start a new chain, or send a shorter context in input)",
                        "previous_response_id",
                        code="context_too_long",
                    )
                context = to_models(stored_items)  # (a compaction item was stored opened, as a message)
                ancestors = [record.id for record in chain]
                _tag_origins(chain, [len(items) for items in per_record], context)
                previous_target = target_of(chain[-1])
            upstream = request.model_copy(update={"input": context + resolved})
            upstream._origins = origins_of(upstream.items())
            upstream._previous_target = previous_target
        if not store:
            return upstream, None, None
        record = Record(
            id="",
            response=b"",
            ancestors=ancestors,
            settings=pydantic_core.to_json({"model": request.model}),
        )
        return upstream, record, resolved

    async def _chain(self, tenant: str, previous_id: str) -> list[Record]:
        """The previous response and all its ancestors, oldest first: two store round trips at any depth."""
        store = self.records.store
        try:
            [previous] = await store.get_many(tenant, [previous_id])
            if previous is None:
                raise not_found("response", previous_id, "previous_response_id")
            if is_running(previous, self.records.interrupted_after):
                raise invalid_request(
                    f"the response {previous_id!r} is still in progress: continue from it once it has ended",
                    "previous_response_id",
                    code="previous_response_in_progress",
                )
            earlier = await store.get_many(tenant, previous.ancestors) if previous.ancestors else []
        except StoreError as e:
            raise self.records.down("read", e) from None
        if any(record is None for record in earlier):
            raise RouterError(
                404,
                f"an earlier response in the chain of {previous_id!r} is no longer stored (deleted or expired)",
                type="not_found",
                code="not_found",
                param="previous_response_id",
            )
        return [*(record for record in earlier if record is not None), previous]

    async def _reference(self, tenant: str, item_id: str, param: str) -> Any:
        """A stored item by id: in the response its id was made from, if it is there; else where the store's
        index says (ids the client gave, or an item passed on as input to a later response)."""
        store = self.records.store
        item = None
        try:
            derived = response_of(item_id)
            record = await store.get(tenant, derived) if derived else None
            item = find_in(record, item_id) if record is not None else None
            if item is None:
                response_id = await store.find_item(tenant, item_id)
                record = await store.get(tenant, response_id) if response_id else None
                item = find_in(record, item_id) if record is not None else None
        except StoreError as e:
            raise self.records.down("read", e) from None
        if item is None:
            raise not_found("stored item", item_id, param)
        return to_models([item])[0]

    def _open_reasoning(self, tenant: str, item: ReasoningItem, param: str) -> Any:
        assert item.encrypted_content is not None
        try:
            opened = self.cipher.open(tenant, item.encrypted_content)
        except SealError as e:
            raise invalid_request(str(e), param, code="invalid_encrypted_content") from None
        data: dict[str, Any] = {"type": "reasoning", "summary": opened.get("summary") or []}
        if opened.get("content"):
            data["content"] = opened["content"]
        if opened.get("upstream"):  # the upstream's own encrypted_content (Anthropic's signature), for it again
            data["encrypted_content"] = opened["upstream"]
        if item.id:
            data["id"] = item.id
        model = to_models([data])[0]
        origin = opened.get("origin")  # (the provider that made it; absent in blobs sealed before it was kept)
        if isinstance(origin, str) and model.encrypted_content:
            model._origin = origin
        return model

    def open_compaction(self, tenant: str, item: CompactionItem, param: str) -> MessageItem:
        """A compaction item (`POST /v1/responses/compact`) as what every upstream dialect reads: a user message
        with the summary it sealed. A blob this router did not seal for this tenant (changed, another key's,
        another tenant's, a reasoning item's) is a 400."""
        try:
            summary = self.cipher.open_compaction(tenant, item.encrypted_content)
        except SealError as e:
            raise invalid_request(str(e), param, code="invalid_encrypted_content") from None
        return MessageItem(role="user", content=SUMMARY_PREFIX + summary)


# What an upstream reads in place of a compaction item.
SUMMARY_PREFIX = "Summary of the conversation so far:\n"


def target_of(record: Record) -> str | None:
    """The target (`<model>:<provider>`) that answered a stored response (None for records from before it was kept)."""
    try:
        target = json.loads(record.settings).get("target")
    except (ValueError, AttributeError):
        return None
    return target if isinstance(target, str) else None


def _tag_origins(chain: list[Record], counts: list[int], context: list[Any]) -> None:
    """Mark each stored reasoning item that carries a blob with the provider whose blob it is (`counts`: how many of
    `context`'s items each record gave)."""
    position = 0
    for record, count in zip(chain, counts, strict=True):
        target = target_of(record)
        if target is not None:
            provider = target.rpartition(":")[2]
            for item in context[position : position + count]:
                if isinstance(item, ReasoningItem) and item.encrypted_content:
                    item._origin = provider
        position += count

"""In-process store for tests and single-process experiments (lost on restart; not shared by workers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ferroute.store import Record, Store


class MemoryStore(Store):
    name = "memory"

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Record] = {}
        self.items: dict[tuple[str, str], str] = {}
        self.cancels: set[tuple[str, str]] = set()

    async def put(self, tenant: str, record: Record) -> None:
        self.records[(tenant, record.id)] = replace(record)
        for item_id in record.item_ids:
            self.items[(tenant, item_id)] = record.id

    async def update_response(self, tenant: str, id: str, response: bytes) -> None:
        record = self.records.get((tenant, id))
        if record is not None:
            record.response = response

    async def get(self, tenant: str, id: str) -> Record | None:
        record = self.records.get((tenant, id))
        return replace(record) if record is not None else None

    async def get_many(self, tenant: str, ids: Sequence[str]) -> list[Record | None]:
        return [await self.get(tenant, id) for id in ids]

    async def delete(self, tenant: str, id: str) -> bool:
        self.cancels.discard((tenant, id))
        return self.records.pop((tenant, id), None) is not None

    async def find_item(self, tenant: str, item_id: str) -> str | None:
        return self.items.get((tenant, item_id))

    async def request_cancel(self, tenant: str, id: str) -> None:
        self.cancels.add((tenant, id))

    async def cancel_requested(self, tenant: str, id: str) -> bool:
        return (tenant, id) in self.cancels

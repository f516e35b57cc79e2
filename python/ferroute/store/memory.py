"""In-process store for tests and single-process experiments (lost on restart; not shared by workers).

Responses older than the retention (`[store] ttl_seconds`) are dropped, with their items, as the other
backends drop them: by the time of their first put, oldest first, checked at each operation (a deque in
put order, so each check costs nothing until something is due).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace

from ferroute.store import Record, Store, pieces_after

Key = tuple[str, str]  # (tenant, response id)


class MemoryStore(Store):
    name = "memory"

    def __init__(self, retention: float | None = None) -> None:
        self.retention = retention
        self.records: dict[Key, Record] = {}
        self.items: dict[Key, str] = {}
        self.cancels: set[Key] = set()
        self.events: dict[Key, list[tuple[int, bytes]]] = {}  # streamed background responses' event logs
        self.created: dict[Key, float] = {}  # the time of each stored response's first put
        self.order: deque[tuple[float, Key]] = deque()  # (first put, key), oldest first; stale after a delete

    def _expire(self) -> None:
        if self.retention is None:
            return
        cutoff = time.monotonic() - self.retention
        order = self.order
        while order and order[0][0] < cutoff:
            created, key = order.popleft()
            if self.created.get(key) == created:  # (else deleted, and perhaps put again since)
                self._drop(key)

    def _drop(self, key: Key) -> bool:
        self.created.pop(key, None)
        self.cancels.discard(key)
        self.events.pop(key, None)
        record = self.records.pop(key, None)
        if record is None:
            return False
        tenant, id = key
        for item_id in record.item_ids:
            if self.items.get((tenant, item_id)) == id:
                del self.items[(tenant, item_id)]
        return True

    async def put(self, tenant: str, record: Record) -> None:
        self._expire()
        key = (tenant, record.id)
        if key not in self.created:  # (a background response's progress puts keep its first time)
            now = time.monotonic()
            self.created[key] = now
            self.order.append((now, key))
        self.records[key] = replace(record)
        for item_id in record.item_ids:
            self.items[(tenant, item_id)] = record.id

    async def beat(self, records: Sequence[tuple[str, str]], now: float) -> None:
        for key in records:
            record = self.records.get(key)
            if record is not None and record.alive is not None:
                record.alive = now

    async def update_response(self, tenant: str, id: str, response: bytes) -> None:
        record = self.records.get((tenant, id))
        if record is not None:
            record.response = response

    async def get(self, tenant: str, id: str) -> Record | None:
        self._expire()
        record = self.records.get((tenant, id))
        return replace(record) if record is not None else None

    async def get_many(self, tenant: str, ids: Sequence[str]) -> list[Record | None]:
        return [await self.get(tenant, id) for id in ids]

    async def delete(self, tenant: str, id: str) -> bool:
        self._expire()
        return self._drop((tenant, id))

    async def find_item(self, tenant: str, item_id: str) -> str | None:
        self._expire()
        return self.items.get((tenant, item_id))

    async def request_cancel(self, tenant: str, id: str) -> None:
        self.cancels.add((tenant, id))

    async def cancel_requested(self, tenant: str, id: str) -> bool:
        return (tenant, id) in self.cancels

    async def append_events(self, tenant: str, id: str, first: int, frames: bytes) -> None:
        self.events.setdefault((tenant, id), []).append((first, frames))

    async def read_events(self, tenant: str, id: str, after: int) -> list[tuple[int, bytes]]:
        pieces = self.events.get((tenant, id), [])
        return pieces_after(pieces, after)

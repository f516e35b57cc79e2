"""The response store: one async interface, three backends (`memory`, `sqlite`, `redis`).

Everything is keyed by (tenant, id): the tenant is a hash of the client's API key (`tenant_of`), so
another key's lookups miss exactly as an id that never existed does. A record holds the request's
input items (normalized, each with an id), the response object as the JSON bytes the Rust core
produced (a stream's record is put twice: `in_progress` when it is created, then as it ended), the
heartbeat time of an unfinished one (`alive`), the settings that matter for continuation, and the ids
of every earlier response in its `previous_response_id` chain (oldest first), so a chain of any depth
loads in two round trips: the previous record, then all of its ancestors in one batch (`get_many`).

Backends raise `StoreError` for any failure of the backend itself (the app answers 503); a missing
record is `None`, never an error.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from ferroute.config import StoreConfig

ANONYMOUS = "anonymous"


def tenant_of(api_key: bytes | None) -> str:
    """The tenant of an API key: 32 hex chars of a SHA-256 of the key (the key itself is never stored)."""
    if api_key is None:
        return ANONYMOUS
    return hashlib.sha256(b"ferroute-tenant\0" + api_key).hexdigest()[:32]


class StoreError(Exception):
    """The store backend failed (unreachable, timed out, corrupt); not "no such record"."""


@dataclass(slots=True)
class Record:
    """One stored response."""

    id: str
    response: bytes  # the response object, JSON, as the Rust core wrote it (or a patched status for cancel)
    input_items: bytes = b"[]"  # JSON list of the request's input items, each with an id
    ancestors: list[str] = field(default_factory=list)  # earlier responses of the chain, oldest first
    settings: bytes = b"{}"  # JSON: what continuation needs (model); instructions are not inherited
    # Item ids to map to this response for `item_reference`: those not made from its id (`items.to_index`).
    item_ids: list[str] = field(default_factory=list)
    # While the response runs: the (unix) time of its worker's last heartbeat (`Store.beat`); None once it has
    # ended (the final put clears it), and for records from before heartbeats. A reader that finds it older than
    # `[store] interrupted_after` reports the response `failed` (`app.heartbeat`).
    alive: float | None = None


class Store(ABC):
    """What the router needs from a backend. All methods may raise `StoreError`."""

    name: str = ""

    @abstractmethod
    def put(self, tenant: str, record: Record) -> Awaitable[None]:
        """Create or replace a record (and index its item ids); done once it is stored. (A coroutine, or a
        future where the work is already handed over: the app shields it, and shielding a coroutine starts a
        task.)"""

    @abstractmethod
    def beat(self, records: Sequence[tuple[str, str]], now: float) -> Awaitable[None]:
        """Set `alive` to `now` on each (tenant, id) whose record is still unfinished (`alive` not None): a
        heartbeat. A record that is missing, or was finished meanwhile, is left alone."""

    @abstractmethod
    async def update_response(self, tenant: str, id: str, response: bytes) -> None:
        """Replace only the response bytes of an existing record (background progress)."""

    @abstractmethod
    async def get(self, tenant: str, id: str) -> Record | None: ...

    @abstractmethod
    async def get_many(self, tenant: str, ids: Sequence[str]) -> list[Record | None]:
        """Several records in one round trip, in the order asked."""

    @abstractmethod
    async def delete(self, tenant: str, id: str) -> bool:
        """True when something was deleted."""

    @abstractmethod
    async def find_item(self, tenant: str, item_id: str) -> str | None:
        """The id of the response whose input or output holds the item."""

    @abstractmethod
    async def request_cancel(self, tenant: str, id: str) -> None:
        """Flag a background response for cancelling (seen by whichever process runs it)."""

    @abstractmethod
    async def cancel_requested(self, tenant: str, id: str) -> bool: ...

    @abstractmethod
    async def append_events(self, tenant: str, id: str, first: int, frames: bytes) -> None:
        """Add a piece of a streamed background response's event log: SSE frames whose first event has sequence
        number `first` (`data: [DONE]` included at the end). Deleting the response deletes its log."""

    @abstractmethod
    async def read_events(self, tenant: str, id: str, after: int) -> list[tuple[int, bytes]]:
        """The pieces of the event log holding events after sequence number `after` (each with its first
        event's number, in order; the first may start before `after`: the caller cuts it)."""

    async def close(self) -> None:
        return None


def pieces_after(pieces: Sequence[tuple[int, bytes]], after: int) -> list[tuple[int, bytes]]:
    """Of an event log's pieces (in order, each with its first event's number), those holding events after `after`
    (a piece ends where the next begins; the last is always kept: it may hold `[DONE]`)."""
    return [piece for n, piece in enumerate(pieces) if n + 1 == len(pieces) or pieces[n + 1][0] > after + 1]


def open_store(config: StoreConfig) -> Store:
    """The backend `config` names; nothing connects until first use."""
    if config.backend == "memory":
        from ferroute.store.memory import MemoryStore

        return MemoryStore(retention=config.ttl_seconds or None)
    if config.backend == "sqlite":
        from ferroute.store.sqlite import SQLiteStore

        return SQLiteStore(config.path, retention=config.ttl_seconds or None)
    from ferroute.store.redis import RedisStore

    assert config.url is not None  # config.py requires it for redis
    return RedisStore(config.url, ttl=config.ttl_seconds or None, prefix=config.key_prefix)


__all__ = ["ANONYMOUS", "Record", "Store", "StoreError", "open_store", "pieces_after", "tenant_of"]

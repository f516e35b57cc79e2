"""The shared store: Redis (or Valkey), for several router processes and hosts.

A record is two string keys: `<prefix>o:<tenant>:<id>` holds the response object bytes as they are
(so progress updates of a background response rewrite only that), and `<prefix>m:<tenant>:<id>`
the rest, length-prefixed (input items, ancestor ids, settings). Each item id maps to its response
id at `<prefix>i:<tenant>:<item id>`; a cancel request is `<prefix>c:<tenant>:<id>`. While a response
runs, `<prefix>h:<tenant>:<id>` holds its heartbeat time (ASCII seconds): a key of its own, so a heartbeat
is one small SET (`XX`: never after the final put, which deletes it). Every key
carries the TTL (`ttl_seconds`). Loading several records is ONE command whatever their number: a
small Lua script GETs the keys of each and renews their TTL server-side, so a conversation in use
does not lose its oldest turns while its newest survive. (A pipeline of per-key commands would be
one round trip too, but costs client time per command: loading 50 records took 5.4 ms that way
and 2.1 ms with the script, p50 in bench/continuation.py's store table, pure-Python redis parser.)

The client is a plain `redis.asyncio.Redis` (one server or a proxy in front of several); the script
names keys of several records, so Redis Cluster (keys in different slots) is not supported yet.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ferroute.store import Record, Store, StoreError, pieces_after

_LOAD = """
local out = {}
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    out[i] = redis.call('GET', key)
    if out[i] and ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return out
"""
_LENGTH = struct.Struct(">I")


def _pack(*parts: bytes) -> bytes:
    return b"".join(_LENGTH.pack(len(part)) + part for part in parts)


def _unpack(data: bytes) -> list[bytes]:
    parts: list[bytes] = []
    at = 0
    while at < len(data):
        (size,) = _LENGTH.unpack_from(data, at)
        parts.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return parts


class RedisStore(Store):
    name = "redis"

    def __init__(self, url: str, *, ttl: int | None = 30 * 24 * 3600, prefix: str = "ferroute:") -> None:
        self.url = url
        self.ttl = ttl
        self.prefix = prefix
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
        )
        self.load = self.client.register_script(_LOAD)

    def _keys(self, tenant: str, id: str) -> tuple[str, str]:
        return f"{self.prefix}o:{tenant}:{id}", f"{self.prefix}m:{tenant}:{id}"

    def _alive(self, tenant: str, id: str) -> str:
        return f"{self.prefix}h:{tenant}:{id}"

    def _item(self, tenant: str, item_id: str) -> str:
        return f"{self.prefix}i:{tenant}:{item_id}"

    def _cancel(self, tenant: str, id: str) -> str:
        return f"{self.prefix}c:{tenant}:{id}"

    def _events(self, tenant: str, id: str) -> str:
        return f"{self.prefix}e:{tenant}:{id}"

    async def _exec(self, pipe: Any) -> list[Any]:
        try:
            result: list[Any] = await pipe.execute()
        except (RedisError, OSError) as e:
            raise StoreError(f"redis store: {type(e).__name__}: {e}") from e
        return result

    async def put(self, tenant: str, record: Record) -> None:
        response_key, meta_key = self._keys(tenant, record.id)
        meta = _pack(record.input_items, json.dumps(record.ancestors).encode(), record.settings)
        ttl = self.ttl or None
        pipe = self.client.pipeline(transaction=False)
        pipe.set(response_key, record.response, ex=ttl)
        pipe.set(meta_key, meta, ex=ttl)
        for item_id in record.item_ids:
            pipe.set(self._item(tenant, item_id), record.id, ex=ttl)
        if record.alive is not None:
            pipe.set(self._alive(tenant, record.id), repr(record.alive), ex=ttl)
        else:
            pipe.delete(self._alive(tenant, record.id))
        await self._exec(pipe)

    async def beat(self, records: Sequence[tuple[str, str]], now: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        for tenant, id in records:
            pipe.set(self._alive(tenant, id), repr(now), xx=True, keepttl=True)
        await self._exec(pipe)

    async def update_response(self, tenant: str, id: str, response: bytes) -> None:
        response_key, _ = self._keys(tenant, id)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(response_key, response, xx=True, keepttl=True)  # only while it exists: a DELETE wins
        await self._exec(pipe)

    async def get(self, tenant: str, id: str) -> Record | None:
        [record] = await self._load(tenant, [id], renew=False)
        return record

    async def get_many(self, tenant: str, ids: Sequence[str]) -> list[Record | None]:
        return await self._load(tenant, ids, renew=True)

    async def _load(self, tenant: str, ids: Sequence[str], *, renew: bool) -> list[Record | None]:
        if not ids:
            return []
        keys = [key for id in ids for key in (*self._keys(tenant, id), self._alive(tenant, id))]
        try:
            values: list[Any] = await self.load(keys=keys, args=[self.ttl if renew and self.ttl else 0])
        except (RedisError, OSError) as e:
            raise StoreError(f"redis store: {type(e).__name__}: {e}") from e
        values += [None] * (len(keys) - len(values))  # a Lua table ends at its first nil
        out: list[Record | None] = []
        for n, id in enumerate(ids):
            response, meta, alive = values[3 * n : 3 * n + 3]
            if not response or not meta:
                out.append(None)
                continue
            items, ancestors, settings = _unpack(meta)
            out.append(Record(id=id, response=response, input_items=items, ancestors=json.loads(ancestors),
                              settings=settings, alive=float(alive) if alive else None))  # fmt: skip
        return out

    async def delete(self, tenant: str, id: str) -> bool:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(*self._keys(tenant, id), self._cancel(tenant, id), self._alive(tenant, id))
        pipe.delete(self._events(tenant, id))
        deleted, _ = await self._exec(pipe)
        return bool(deleted)

    async def find_item(self, tenant: str, item_id: str) -> str | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self._item(tenant, item_id))
        [found] = await self._exec(pipe)
        return found.decode() if isinstance(found, bytes) else None

    async def request_cancel(self, tenant: str, id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self._cancel(tenant, id), b"1", ex=self.ttl or 24 * 3600)
        await self._exec(pipe)

    async def cancel_requested(self, tenant: str, id: str) -> bool:
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self._cancel(tenant, id))
        [flag] = await self._exec(pipe)
        return bool(flag)

    async def append_events(self, tenant: str, id: str, first: int, frames: bytes) -> None:
        key = self._events(tenant, id)
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, _LENGTH.pack(first) + frames)  # (a list per response: its pieces in order)
        pipe.expire(key, self.ttl or 24 * 3600)
        await self._exec(pipe)

    async def read_events(self, tenant: str, id: str, after: int) -> list[tuple[int, bytes]]:
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(self._events(tenant, id), 0, -1)
        [raw] = await self._exec(pipe)
        pieces = [(_LENGTH.unpack_from(piece)[0], piece[4:]) for piece in raw]
        return pieces_after(pieces, after)

    async def close(self) -> None:
        await self.client.aclose()

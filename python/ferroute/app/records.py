"""The app's side of the response store: writing an exchange's record when a stream is created (`open`, off the
way to the first event) and when its response ends (`save`), reading records for the caller's tenant (an unfinished
one whose worker is gone reported `failed`: `app.heartbeat`), and what a store failure becomes (a logged, counted
failure that never breaks a response being served; a 503 where the store's answer is the response)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import replace
from typing import Any

import pydantic_core

from ferroute.app.exchange import Exchange
from ferroute.app.heartbeat import UNFINISHED, Heartbeat, as_interrupted, is_interrupted
from ferroute.config import StoreConfig
from ferroute.errors import RouterError, not_found, store_unavailable
from ferroute.store import Record, Store, StoreError
from ferroute.store.items import OUTPUT_ITEMS, derives_items, normalize, output_ids, to_index

error_log = logging.getLogger("ferroute.error")

__all__ = ["UNFINISHED", "Records", "fill_input", "with_status"]


class Records:
    """The store as the app uses it, with failures counted by operation (`ferroute_store_errors_total`)."""

    def __init__(self, store: Store, config: StoreConfig | None = None) -> None:
        config = config or StoreConfig()
        self.store = store
        self.errors: dict[str, int] = {}
        self.outage = False  # a failure was logged and the store has not answered since
        self.interrupted_after = config.interrupted_after
        self.heartbeat = Heartbeat(store, config.heartbeat_interval, self.failed)
        # Streams' first writes by response id: None while scheduled, then the put (`save` waits for it).
        self.opening: dict[str, asyncio.Future[None] | None] = {}

    def open(self, ex: Exchange) -> None:
        """Record a stream as `in_progress` (the request's input, so `GET` and `input_items` work while it streams,
        on any worker sharing the store), off the way to its first event: called just before the pump opens the
        upstream, the write runs at the loop's next turn, once the upstream request is on its way (the
        request's task waits for the upstream then), and its put completes on its own. It holds the loop 27 µs
        p50, 97 µs p99 (in-process, 2,000 streams, sqlite store), hidden by any real upstream's time to first
        token; A/B through `ferroute serve` in bench/results/crash_safe_ab.txt."""
        self.opening[ex.translator.response_id] = None
        asyncio.get_running_loop().call_soon(self._open, ex)

    def _open(self, ex: Exchange) -> None:
        key = ex.translator.response_id
        record = ex.record
        if key not in self.opening or record is None or ex.saved:
            self.opening.pop(key, None)  # (saved or discarded before this turn came)
            return
        first = _in_progress(ex, record)
        try:
            opening = asyncio.ensure_future(self.store.put(ex.tenant, first))
        except Exception as e:
            del self.opening[key]
            self.failed("write", e, key)
            return
        opening.add_done_callback(lambda done: self._opened(done, key))
        self.opening[key] = opening
        self.heartbeat.add(ex.tenant, key)

    def _opened(self, opening: asyncio.Future[None], key: str) -> None:
        error = None if opening.cancelled() else opening.exception()
        if error is not None:
            self.failed("write", error, key)
        elif not opening.cancelled():
            self.ok()

    async def _opened_first(self, ex: Exchange) -> bool:
        """The stream's first write, if any, has ended (the next write goes after it: Redis's connections do not
        keep order); whether there was one. Its heartbeats stop."""
        key = ex.translator.response_id
        opening = self.opening.pop(key, None)
        self.heartbeat.remove(ex.tenant, key)
        if opening is None:
            return False
        with contextlib.suppress(Exception):  # (its failure is counted already)
            await asyncio.shield(opening)
        return True

    async def open_now(self, ex: Exchange) -> None:
        """`[store] on_error = "fail"`: the record written `in_progress` before the upstream call, or the 503 that
        says the store is unavailable (nothing goes upstream)."""
        record = ex.record
        assert record is not None
        first = _in_progress(ex, record)
        try:
            await asyncio.shield(self.store.put(ex.tenant, first))
        except Exception as e:
            raise self.down("write", e) from None
        self.ok()
        key = ex.translator.response_id
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        self.opening[key] = done
        self.heartbeat.add(ex.tenant, key)

    async def save(self, ex: Exchange, response: bytes | None = None) -> bool:
        """Write the exchange's record (once), finished; whether it is stored (True also with nothing to store). A
        failure is logged (once an outage) and counted; it never breaks the response, which then says
        `"store": false`."""
        if ex.saved:
            return True
        if ex.translator.response_id in self.opening:  # (a coroutine call less where there was no first write)
            await self._opened_first(ex)
        record = ex.record
        if record is None or ex.saved:
            return True
        ex.saved = True
        fill_input(ex)
        record.response = ex.translator.response_json() if response is None else response
        # The target that answered: a continuation prefers it, and its reasoning blobs open only at its provider.
        settings: dict[str, Any] = {"model": ex.request.model, "target": ex.upstream_model + ":" + ex.provider.name}
        if ex.events:
            settings["events"] = True  # (its stream can be followed: `GET …?stream=true`)
        record.settings = pydantic_core.to_json(settings)
        record.alive = None
        if not derives_items(record.id):  # (else the output items' ids are all made from it: nothing to index)
            record.item_ids = record.item_ids + to_index(output_ids(record.response), record.id)
        try:
            # Shielded: a client that leaves during the write does not cut it in half.
            await asyncio.shield(self.store.put(ex.tenant, record))
        except Exception as e:
            self.failed("write", e, record.id)
            return False
        self.ok()
        return True

    async def discard(self, ex: Exchange) -> None:
        """A stream that ended before its first byte went out (an HTTP error answered it; the client never saw its
        id): its `in_progress` record goes, as nothing was stored for it before records were written at creation."""
        if not await self._opened_first(ex):
            return
        key = ex.translator.response_id
        try:
            await asyncio.shield(self.store.delete(ex.tenant, key))  # (a coroutine: shield runs it as a task)
        except Exception as e:
            self.failed("write", e, key)

    async def get(self, tenant: str, response_id: str) -> Record:
        """The caller's record (`failed` if its worker is gone: see `app.heartbeat`), or the 404 that says nothing
        about other tenants."""
        try:
            record = await self.store.get(tenant, response_id)
        except StoreError as e:
            raise self.down("read", e) from None
        self.ok()
        if record is None:
            raise not_found("response", response_id)
        return self.as_read(record)

    def as_read(self, record: Record) -> Record:
        """The record as readers see it: an unfinished one whose heartbeat is stale is reported `failed`."""
        if is_interrupted(record, self.interrupted_after):
            record.response = as_interrupted(record.response, self.interrupted_after)
        return record

    def failed(self, op: str, error: BaseException, response_id: str | None = None) -> None:
        """Count a failure (`ferroute_store_errors_total`); log the first of an outage (until `ok`), not each."""
        self.errors[op] = self.errors.get(op, 0) + 1
        if self.outage:
            return
        self.outage = True
        error_log.error("store %s failed (%s store)%s: %s; further failures are counted, not logged, until it "
                        "works again", op, self.store.name, f" for {response_id}" if response_id else "",
                        error)  # fmt: skip

    def ok(self) -> None:
        """The store answered: an outage, if one was logged, is over."""
        if self.outage:
            self.outage = False
            error_log.warning("the %s store works again", self.store.name)

    def down(self, op: str, error: BaseException) -> RouterError:
        """A failure where the store's answer was needed: counted, and the 503 to answer."""
        self.failed(op, error)
        return store_unavailable(self.store.name)


def _in_progress(ex: Exchange, record: Record) -> Record:
    """The record's first write: its input items filled in, the response as it stands, a heartbeat time."""
    fill_input(ex)
    return replace(record, response=ex.translator.response_json(), alive=time.time())


def fill_input(ex: Exchange) -> None:
    """The record's input items, before its first write: normalized (with ids) and serialized here rather than
    in `Continuation.prepare`, which is on the way to the upstream request (`_prepare` 44 -> 25 µs p50 at
    concurrency 1, in-app timestamps, 3 x 600 requests interleaved)."""
    items, ex.input_to_store = ex.input_to_store, None
    record = ex.record
    if items is None or record is None:
        return
    stored = [normalize(item, record.id, OUTPUT_ITEMS + k) for k, item in enumerate(items)]
    record.input_items = pydantic_core.to_json(stored)  # (json.dumps + encode: ~6x the time)
    record.item_ids = to_index([item["id"] for item in stored], record.id) + record.item_ids


def with_status(response: bytes, status: str) -> bytes:
    data = json.loads(response)
    data["status"] = status
    if status == "cancelled":
        data["error"] = None
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

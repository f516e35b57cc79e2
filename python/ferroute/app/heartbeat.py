"""Liveness of stored responses that are still running, so that a crash leaves a readable `failed` record rather
than an `in_progress` one forever.

A stream's record is written `in_progress` when the response is created (`Records.open`) and finished at its end;
a background response's when it is queued. While it runs, its worker renews the record's heartbeat time (`alive`):
one `Heartbeat` per worker, a `call_later` chain that runs only while the worker has such responses, writes every
`[store] heartbeat_interval` seconds one batch (`Store.beat`) for all of them. The record's final put clears `alive`.
A reader that finds an unfinished record whose heartbeat is older than `[store] interrupted_after` reports it
`failed` (`as_interrupted`): the process that ran it is gone. The record itself is not rewritten: a write-back would
race with a worker that is only slow (its final put must win), and the report is the same bytes at every read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from ferroute.store import Record, Store

UNFINISHED = ("queued", "in_progress")
INTERRUPTED = "interrupted"


class Heartbeat:
    """Every `interval` seconds while the worker runs stored responses: one `Store.beat` for all of them."""

    def __init__(self, store: Store, interval: float, failed: Callable[[str, BaseException], None]) -> None:
        self.store = store
        self.interval = interval
        self.failed = failed
        self.live: set[tuple[str, str]] = set()  # (tenant, response id)
        self.handle: asyncio.TimerHandle | None = None
        self.beating: asyncio.Future[None] | None = None

    def add(self, tenant: str, response_id: str) -> None:
        self.live.add((tenant, response_id))
        if self.handle is None:
            self.handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def remove(self, tenant: str, response_id: str) -> None:
        self.live.discard((tenant, response_id))

    def _tick(self) -> None:
        self.handle = None
        if not self.live:
            return
        self.handle = asyncio.get_running_loop().call_later(self.interval, self._tick)
        if self.beating is not None and not self.beating.done():
            return  # (the store is slow: the next tick writes the newer time)
        self.beating = asyncio.ensure_future(self.store.beat(list(self.live), time.time()))
        self.beating.add_done_callback(self._beaten)

    def _beaten(self, beating: asyncio.Future[None]) -> None:
        error = None if beating.cancelled() else beating.exception()
        if error is not None:
            self.failed("heartbeat", error)


def is_interrupted(record: Record, after: float) -> bool:
    """Whether the record is of a response still running when its worker last beat, longer ago than `after`."""
    return record.alive is not None and time.time() - record.alive > after


def is_running(record: Record, after: float) -> bool:
    """Whether the record is of a response still running (unfinished, and its worker beat lately)."""
    if record.alive is None or is_interrupted(record, after):
        return False
    return json.loads(record.response).get("status") in UNFINISHED  # (a background one cancelled for a gone worker)


def as_interrupted(response: bytes, after: float) -> bytes:
    """An unfinished response, as a reader reports it once its worker is gone: `failed`, with the `interrupted`
    error, and any item it was still writing `incomplete` (as `translator.fail` leaves them)."""
    data = json.loads(response)
    if data.get("status") not in UNFINISHED:
        return response
    data["status"] = "failed"
    data["completed_at"] = None
    data["error"] = {
        "code": INTERRUPTED,
        "message": f"the response was interrupted: the router process running it stopped (no heartbeat for "
        f"{after:g} s)",
    }
    for item in data.get("output") or []:
        if isinstance(item, dict) and item.get("status") == "in_progress":
            item["status"] = "incomplete"
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

"""Background responses (`background: true`): stored as `queued`, answered at once, run on in a task of this
process with their progress written to the store, and cancelled wherever they run through a flag in the store
that their worker polls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from ferroute._types import Message
from ferroute.app.clock import Clock
from ferroute.app.exchange import Exchange, Pump
from ferroute.app.http import send_json
from ferroute.app.records import UNFINISHED, Records, fill_input, with_status
from ferroute.config import StoreConfig
from ferroute.errors import RouterError, internal_error, invalid_request, shut_down_midway
from ferroute.store import Record, StoreError

error_log = logging.getLogger("ferroute.error")


class Background:
    def __init__(self, pump: Pump, clock: Clock, records: Records, config: StoreConfig) -> None:
        self.pump = pump
        self.clock = clock
        self.records = records
        self.interval = config.background_interval
        self.jobs: dict[str, Exchange] = {}  # background responses this process runs
        self.tasks: set[asyncio.Task[Any]] = set()  # (the app's, to wait for at shutdown)

    async def start(self, ex: Exchange) -> int:
        """Store the response as `queued`, answer at once, and run it on in a task of this process."""
        record = ex.record
        assert record is not None
        queued = ex.translator.queued_json()
        fill_input(ex)
        record.response = queued
        record.alive = time.time()  # (unfinished: its heartbeat runs until `records.save`)
        try:
            await self.records.store.put(ex.tenant, record)
        except StoreError as e:
            raise self.records.down("write", e) from None
        self.records.heartbeat.add(ex.tenant, record.id)
        original_send = ex.send

        async def nowhere(message: Message) -> None:
            return None

        ex.send = nowhere
        ex.on_end = None
        # The request ends with the job (a limited key's slot is held until then), not with this answer.
        ending, ex.ending = ex.ending, None
        job = asyncio.create_task(self._run(ex))
        self.jobs[record.id] = ex
        self.tasks.add(job)

        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            self.jobs.pop(record.id, None)
            translator = ex.translator  # (its usage counted once, where it ends)
            self.pump.metrics.usage(
                ex.log.get("key", ""), ex.log.get("model", ""), translator.usage, ex.upstream_model, ex.provider.name
            )
            if ending is not None:
                self.tasks.add(settling := asyncio.ensure_future(ending()))
                settling.add_done_callback(self.tasks.discard)

        job.add_done_callback(done)
        return await send_json(original_send, 200, queued)

    async def _run(self, ex: Exchange) -> None:
        translator = ex.translator
        response_id = translator.response_id
        records = self.records
        work = asyncio.create_task(self.pump.work(ex))
        ex.cancel = work.cancel
        self.clock.time(ex)
        was_cancelled = False
        try:
            written = -1
            while True:
                done, _ = await asyncio.wait({work}, timeout=self.interval)
                if done:
                    break
                if ex.cancel_requested or await self._cancel_flag(ex.tenant, response_id):
                    was_cancelled = True
                    break
                if ex.reads != written and ex.record is not None:  # progress: the output so far
                    written = ex.reads
                    try:
                        await records.store.update_response(ex.tenant, response_id, translator.response_json())
                    except StoreError as e:
                        records.failed("write", e, response_id)
        except asyncio.CancelledError:  # the process is shutting down
            work.cancel()
            _fail(ex, shut_down_midway())
            with contextlib.suppress(Exception):
                await asyncio.shield(records.save(ex))
            raise
        finally:
            self.clock.untime(ex)
            work.cancel()
            await asyncio.wait({work})
            if ex.upstream is not None:
                with contextlib.suppress(Exception):
                    await ex.upstream.aclose()
        if was_cancelled:
            translator.cancel()
            await records.save(ex)
            return
        failure = work.exception() if work.done() and not work.cancelled() else None
        if translator.status == "in_progress":
            if ex.timeout == "shutdown":
                _fail(ex, shut_down_midway())
            elif ex.timeout is not None:
                _fail(ex, ex.timeout_error())
            elif ex.error is not None:
                _fail(ex, ex.error)
            else:
                if failure is not None and not isinstance(failure, RouterError):
                    error_log.error("background response %s failed", response_id, exc_info=failure)
                _fail(ex, internal_error())
        await records.save(ex)

    async def _cancel_flag(self, tenant: str, response_id: str) -> bool:
        try:
            return await self.records.store.cancel_requested(tenant, response_id)
        except StoreError as e:
            self.records.failed("read", e, response_id)
            return False

    def forget(self, tenant: str, response_id: str) -> None:
        """The response was deleted: a job running it here stops, and writes nothing more."""
        job = self.jobs.get(response_id)
        if job is not None and job.tenant == tenant:
            job.cancel_requested = True
            job.record = None

    async def cancel(self, tenant: str, record: Record) -> bytes:
        """Cancel a background response, wherever it runs: a flag in the store that its worker polls."""
        response = json.loads(record.response)
        if not response.get("background"):
            raise invalid_request("only a background response can be cancelled", code="not_background")
        if response.get("status") not in UNFINISHED:
            return record.response
        job = self.jobs.get(record.id)
        if job is not None and job.tenant == tenant:
            job.cancel_requested = True
        records = self.records
        try:
            await records.store.request_cancel(tenant, record.id)
        except StoreError as e:
            raise records.down("write", e) from None
        deadline = time.monotonic() + max(5.0, 4 * self.interval)
        latest = record
        while time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, self.interval))
            latest = await records.get(tenant, record.id)
            if json.loads(latest.response).get("status") not in UNFINISHED:
                return latest.response
        # No worker answered (its process is gone): the router cancels the record itself.
        final = with_status(latest.response, "cancelled")
        try:
            await records.store.update_response(tenant, record.id, final)
        except StoreError as e:
            raise records.down("write", e) from None
        return final


def _fail(ex: Exchange, error: RouterError) -> None:
    """End a background response's translator as failed with `error` (nothing is sent: there is no client)."""
    if ex.translator.status == "in_progress":
        ex.translator.fail(error.message, code=error.code or "upstream_error", type=error.type)

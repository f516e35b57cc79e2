"""Background responses (`background: true`): stored as `queued`, answered at once, run on in a task of this
process with their progress written to the store, and cancelled wherever they run through a flag in the store
that their worker polls.

With `stream: true` too, the response's events are kept (`EventLog`): in this process while it runs, and in the
store a piece at a time (every `background_interval`, and at the end before the final record). The client that
created it follows the log as a stream; if it goes away the response runs on, and it or any other client
(`GET /v1/responses/{id}?stream=true&starting_after=N`, on any worker or instance sharing the store) replays what
it missed and follows the rest: live from the log on the worker that runs it, by polling the store elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from ferroute._types import Message, Send
from ferroute.app.clock import PING, Clock
from ferroute.app.exchange import DONE, Exchange, Pump
from ferroute.app.http import SSE_HEADERS, send_json
from ferroute.app.records import UNFINISHED, Records, fill_input, with_status
from ferroute.config import StoreConfig
from ferroute.errors import RouterError, internal_error, invalid_request, shut_down_midway
from ferroute.store import Record, StoreError

error_log = logging.getLogger("ferroute.error")


class EventLog:
    """A streamed background response's SSE frames, as pieces numbered by their first event's `sequence_number`:
    all of them in this process while the response runs, and written to the store a piece at a time."""

    def __init__(self) -> None:
        self.pieces: list[tuple[int, bytes]] = []
        self.next = 0  # the sequence number of the next event
        self.saved = 0  # pieces in the store
        self.ended = False  # `data: [DONE]` is in
        self.changed: asyncio.Future[None] | None = None  # followers wait on it

    def add(self, frames: bytes) -> None:
        if not frames or frames == PING or self.ended:
            return
        self.pieces.append((self.next, frames))
        self.next += events_in(frames)
        self.ended = frames.endswith(DONE)
        changed, self.changed = self.changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until a piece is added (or `timeout` seconds)."""
        if self.changed is None:
            self.changed = asyncio.get_running_loop().create_future()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.changed), timeout)

    async def save(self, records: Records, tenant: str, response_id: str) -> None:
        """What the store does not have yet, as one piece."""
        start = self.saved
        pending = self.pieces[start:]
        if not pending:
            return
        # (Counted as saved before the write: a save cancelled mid-write at shutdown, whose write may still land,
        # is not written again by the final one.)
        self.saved = start + len(pending)
        try:
            await records.store.append_events(tenant, response_id, pending[0][0], b"".join(p for _, p in pending))
        except StoreError as e:
            records.failed("write", e, response_id)
            self.saved = start  # (the next save tries these again)


def events_in(frames: bytes) -> int:
    """How many events (not `[DONE]`, not comments) SSE frames hold: each begins with `event: ` (a line break in
    an event's data is escaped in its JSON, so `\n\nevent: ` only ever begins a frame)."""
    return frames.count(b"\n\nevent: ") + frames.startswith(b"event: ")


def frames_after(first: int, frames: bytes, after: int) -> bytes:
    """The frames of a piece (its first event numbered `first`) after event `after` (and any `[DONE]`)."""
    if first > after:
        return frames
    kept = []
    number = first
    for frame in frames.split(b"\n\n"):
        if not frame:
            continue
        if frame.startswith(b"event: "):
            if number > after:
                kept.append(frame)
            number += 1
        elif frame.startswith(b"data: [DONE]"):
            kept.append(frame)
    return b"".join(frame + b"\n\n" for frame in kept)


class Background:
    def __init__(
        self, pump: Pump, clock: Clock, records: Records, config: StoreConfig, keepalive_interval: float = 15.0
    ) -> None:
        self.pump = pump
        self.clock = clock
        self.records = records
        self.interval = config.background_interval
        self.keepalive_interval = keepalive_interval
        self.jobs: dict[str, Exchange] = {}  # background responses this process runs
        self.logs: dict[str, EventLog] = {}  # the event logs of the streamed ones
        self.tasks: set[asyncio.Task[Any]] = set()  # (the app's, to wait for at shutdown)

    async def start(self, ex: Exchange) -> int:
        """Store the response as `queued`, answer at once, and run it on in a task of this process."""
        record = ex.record
        assert record is not None
        queued = ex.translator.queued_json()
        fill_input(ex)
        record.response = queued
        record.alive = time.time()  # (unfinished: its heartbeat runs until `records.save`)
        if ex.stream:
            record.settings = b'{"events":true}'  # (followed before it ends: `GET …?stream=true`)
        try:
            await self.records.store.put(ex.tenant, record)
        except StoreError as e:
            raise self.records.down("write", e) from None
        self.records.heartbeat.add(ex.tenant, record.id)
        original_send = ex.send
        log = EventLog() if ex.stream else None

        async def nowhere(message: Message) -> None:
            return None

        async def into_log(message: Message) -> None:
            assert log is not None
            if message["type"] == "http.response.body":
                log.add(message.get("body", b""))

        ex.send = nowhere if log is None else into_log
        ex.events = log is not None
        ex.on_end = None
        # The request ends with the job (a limited key's slot is held until then), not with this answer.
        ending, ex.ending = ex.ending, None
        job = asyncio.create_task(self._run(ex, log))
        self.jobs[record.id] = ex
        if log is not None:
            self.logs[record.id] = log
        self.tasks.add(job)

        def done(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            self.jobs.pop(record.id, None)
            self.logs.pop(record.id, None)
            translator = ex.translator  # (its usage counted once, where it ends)
            self.pump.metrics.usage(
                ex.log.get("key", ""), ex.log.get("model", ""), translator.usage, ex.upstream_model, ex.provider.name
            )
            if ending is not None:
                self.tasks.add(settling := asyncio.ensure_future(ending()))
                settling.add_done_callback(self.tasks.discard)

        job.add_done_callback(done)
        if ex.trace is not None:
            job.add_done_callback(ex.trace.detach())
        if log is None:
            return await send_json(original_send, 200, queued)
        # The creating client follows the stream; if it goes away the response runs on.
        return await self.follow_log(original_send, log, -1, ex.headers)

    async def follow_log(
        self, send: Send, log: EventLog, after: int, headers: list[tuple[bytes, bytes]] | None = None
    ) -> int:
        """A stream of `log`'s events after `after`, live until its `[DONE]` (keep-alives meanwhile). A client
        that goes away ends only its stream."""
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + (headers or [])})
            sent = 0  # pieces of the log looked at
            while True:
                pieces = log.pieces
                if sent < len(pieces):
                    out = b"".join(frames_after(first, frames, after) for first, frames in pieces[sent:])
                    sent = len(pieces)
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                    continue
                if log.ended:
                    break
                await log.wait(self.keepalive_interval)
                if sent == len(log.pieces) and not log.ended:
                    await send({"type": "http.response.body", "body": PING, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # (the client went away: the response runs on)
            pass
        return 200

    async def follow_store(self, send: Send, tenant: str, record: Record, after: int) -> int:
        """`follow_log` for a response another process runs (or ran): its pieces read from the store every
        `background_interval`, until its `[DONE]`; a response that ended without one (its worker died) gets a
        terminal event made from its stored state."""
        records = self.records
        quiet = 0.0
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            while True:
                pieces = await records.store.read_events(tenant, record.id, after)
                out = b"".join(frames_after(first, frames, after) for first, frames in pieces)
                if pieces:
                    last_first, last_frames = pieces[-1]
                    after = max(after, last_first + events_in(last_frames) - 1)
                if out:
                    quiet = 0.0
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if out.endswith(DONE) or (pieces and pieces[-1][1].endswith(DONE)):
                    break
                latest = await records.get(tenant, record.id)
                if json.loads(latest.response).get("status") not in UNFINISHED:
                    # Finished: its last pieces are written before its final record, so one more read has them.
                    pieces = await records.store.read_events(tenant, record.id, after)
                    out = b"".join(frames_after(first, frames, after) for first, frames in pieces)
                    if not out.endswith(DONE):
                        out += _terminal(latest.response, after + 1)
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                    break
                await asyncio.sleep(self.interval)
                quiet += self.interval
                if quiet >= self.keepalive_interval:
                    quiet = 0.0
                    await send({"type": "http.response.body", "body": PING, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (StoreError, RouterError) as e:  # (the store failed mid-stream: the stream ends, the client may resume)
            records.failed("read", e, record.id)
        except Exception:  # (the client went away)
            pass
        return 200

    async def _run(self, ex: Exchange, log: EventLog | None = None) -> None:
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
                    if log is not None:
                        await log.save(records, ex.tenant, response_id)
                    try:
                        await records.store.update_response(ex.tenant, response_id, translator.response_json())
                    except StoreError as e:
                        records.failed("write", e, response_id)
        except asyncio.CancelledError:  # the process is shutting down
            work.cancel()
            _fail(ex, shut_down_midway(), log)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._save(ex, log))
            raise
        finally:
            self.clock.untime(ex)
            work.cancel()
            await asyncio.wait({work})
            if ex.upstream is not None:
                with contextlib.suppress(Exception):
                    await ex.upstream.aclose()
        if was_cancelled:
            out = translator.cancel()
            if log is not None:
                log.add(out + (b"" if out.endswith(DONE) else DONE))
            await self._save(ex, log)
            return
        failure = work.exception() if work.done() and not work.cancelled() else None
        if translator.status == "in_progress":
            if ex.timeout == "shutdown":
                _fail(ex, shut_down_midway(), log)
            elif ex.timeout is not None:
                _fail(ex, ex.timeout_error(), log)
            elif ex.error is not None:
                _fail(ex, ex.error, log)
            else:
                if failure is not None and not isinstance(failure, RouterError):
                    error_log.error("background response %s failed", response_id, exc_info=failure)
                _fail(ex, internal_error(), log)
        await self._save(ex, log)

    async def _save(self, ex: Exchange, log: EventLog | None) -> None:
        """The final record, after the last of the event log (a reader of the store that sees the record finished
        finds every event)."""
        if log is not None:
            if not log.ended:
                log.add(DONE)
            await log.save(self.records, ex.tenant, ex.translator.response_id)
        await self.records.save(ex)

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


def _fail(ex: Exchange, error: RouterError, log: EventLog | None = None) -> None:
    """End a background response's translator as failed with `error` (its events go to the log, if it has one)."""
    if ex.translator.status == "in_progress":
        out = ex.translator.fail(error.message, code=error.code or "upstream_error", type=error.type)
        if log is not None:
            log.add(out)


def _terminal(response: bytes, number: int) -> bytes:
    """The end of a stream whose events stopped short (its worker died): the stored response as its terminal
    event, numbered `number`, and `[DONE]`."""
    stored = json.loads(response)
    kind = {"completed": "response.completed", "incomplete": "response.incomplete"}
    event_type = kind.get(stored.get("status"), "response.failed")  # (a cancelled one's stream ends so too)
    event = {"type": event_type, "sequence_number": number, "response": stored}
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event_type}\ndata: {data}\n\n".encode() + DONE

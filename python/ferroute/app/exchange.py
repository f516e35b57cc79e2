"""One `POST /v1/responses` in flight (`Exchange`) and the pump that runs it (`Pump`): open the upstream, feed each
read to the Rust translator, send what it returns, end the stream on time-outs and failures.

The hot path: per upstream read, one call into Rust (`translator.feed`) and one ASGI `send` of whatever it
returned; Python never sees a token. The work runs in the request's own task, with no task beside it: the
clock (`clock.Clock`) and the disconnect watcher (`clock.Watcher`) stop it by cancelling that task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import httpx

from ferroute import _core
from ferroute._transport import StreamTransport
from ferroute._types import Receive, Send
from ferroute.app.clock import Clock, Watcher
from ferroute.app.http import SSE_HEADERS, TASK_CANCEL, ClientGone, send_json, uncancel
from ferroute.errors import (
    RouterError,
    internal_error,
    malformed_answer,
    shutting_down,
    upstream_error_from,
    upstream_failed,
    upstream_timeout,
)
from ferroute.metrics import Metrics
from ferroute.models import ResponsesRequest
from ferroute.providers import Provider, Translator, Upstream
from ferroute.routing.reasoning import for_provider
from ferroute.routing.routes import Failover, Route, Target
from ferroute.store import ANONYMOUS, Record
from ferroute.telemetry import start_attempt
from ferroute.tools.hosted import Plan, Tools

if TYPE_CHECKING:
    from ferroute.telemetry import Attempt, ResponseTrace

error_log = logging.getLogger("ferroute.error")

DONE = b"data: [DONE]\n\n"
# How an exchange's events reach the client: SSE frames in an HTTP body, or one WebSocket text message per event
# (the translator's `framing="json"`: each event's JSON object and a newline, no `[DONE]`).
Framing = Literal["sse", "json"]
SSE: Final = "sse"
MESSAGES: Final = "json"
_DRAIN_AFTER_DONE = 0.1  # seconds the upstream's body end is awaited after its `[DONE]`
# A big first upstream read (an answer the upstream had ready) is fed in two: its first this many bytes
# (~9 chat.completion.chunk events), sent at once, then the rest. Measured at concurrency 1 with 200-event
# answers (A/B, 3 x 400 requests each): added TTFE p50 -0.15 ms, router CPU +~50 µs per request.
FIRST_PIECE = 2048


@dataclass(slots=True, eq=False)  # (compared and hashed by identity: the clock keeps a set of them)
class Exchange:
    """One `POST /v1/responses` in flight."""

    send: Send
    request: ResponsesRequest
    provider: Provider
    upstream_model: str
    translator: Translator
    stream: bool
    began: float
    upstream: Upstream | None = None
    started: bool = False  # the 200 and its headers went out
    sending: bool = False  # the work is in an ASGI send (the clock sends no keep-alive then)
    writes: int = 0  # ASGI sends of body bytes completed (the clock's measure of a client that reads nothing)
    pinging: asyncio.Future[None] | None = None  # a keep-alive is being sent (the work waits for it)
    reads: int = 0  # upstream reads so far (the clock's measure of idleness)
    first_event_at: float | None = None
    timeout: str | None = None  # which timeout fired
    error: RouterError | None = None  # failed before the first byte
    result: bytes | None = None  # the non-streaming response body
    log: dict[str, Any] = field(default_factory=dict)
    tenant: str = ANONYMOUS
    record: Record | None = None  # to be stored when the response ends (None: `store` is false)
    # The record's input items, normalized (ids given) and serialized only when it is first stored: the work is
    # after the upstream request then, not on the way to it (`Continuation.fill_input`).
    input_to_store: list[Any] | None = None
    saved: bool = False
    # Writes `record` (whether it was stored); run before the last frames go out, so that they can say whether.
    on_end: Callable[[], Awaitable[bool]] | None = None
    # A whole response's body is the translator's client view (not the stored one): its reasoning policy changes
    # what a client sees of `encrypted_content`.
    client_view: bool = False
    cancel_requested: bool = False  # background: a cancel arrived at this process
    # Hosted tools (`ferroute.tools`): the request's plan and the app's tools; None for a request without any.
    plan: Plan | None = None
    tools_box: Tools | None = None
    secrets: _core.Secrets | None = None  # masked in tool outputs (the router's and the request's credentials)
    tooling: bool = False  # a hosted tool is running: the upstream timeouts wait (keep-alives go on)
    # SSE (an HTTP response) or MESSAGES (WebSocket: no HTTP head, one text message per event, no `: ping`s); the
    # translator was made with the same framing.
    framing: Framing = SSE
    # Routes and retries (`ferroute.routing`): the targets left to try, None where there is one attempt only; the
    # translator for another target (`remake(provider, started)`; `started`: the start events went out already).
    failover: Failover | None = None
    remake: Callable[[Provider, bool], Translator] | None = None
    # The conversation as the continuation resolved it, before `request` left out what `provider` cannot take
    # (another provider's reasoning blobs: `ferroute.routing.reasoning`); each attempt's request is made from it.
    context: ResponsesRequest | None = None
    attempt_began: float = 0.0  # when the current upstream attempt began (the first-event timeout runs from it)
    preamble: bool = False  # (failover) the current response's `response.created`/`in_progress` went out
    # Stopping the work (the clock's timeouts, the client's disconnect): `cancel` cancels the task running it.
    cancel: Callable[[], Any] | None = None
    stop: str | None = None  # why the work was cancelled: "client_gone" or "timeout" (None: it was not)
    done: bool = False  # the work has ended (nothing cancels it any more)
    ping: asyncio.Task[None] | None = None  # a keep-alive being sent
    # The clock's view of the exchange (see Clock.check).
    seen: int = -1  # `reads` at the last tick
    quiet_since: float = 0.0
    pinged: float = 0.0
    written: int = -1  # `writes` when the current send was first seen pending
    sent_seen: int = -1  # `writes` at the last tick (the keep-alive interval runs from the client's last bytes)
    stuck_since: float = 0.0
    # Headers every answer of this exchange carries besides its own (a limited key's `x-ratelimit-*`); None for most.
    headers: list[tuple[bytes, bytes]] | None = None
    # Run once when the response has ended, before its last bytes go out (a limited key's request ends: its slot
    # freed and its tokens settled, so that the client's next request sees them); None for most.
    ending: Callable[[], Awaitable[None]] | None = None
    trace: ResponseTrace | None = None  # the response's span when tracing is on (`ferroute.telemetry`)
    # The stream's last bytes went out (`end`): a client that hangs up after them (while the upstream's body end is
    # read) had the whole response.
    delivered: bool = False
    events: bool = False  # a streamed background response: its events are kept (`app.background.EventLog`)

    async def start(self) -> None:
        if not self.started:
            self.started = True
            self.first_event_at = time.monotonic()
            if self.framing == MESSAGES:  # (a WebSocket: accepted when it connected, no head per response)
                return
            try:
                headers = SSE_HEADERS if self.headers is None else SSE_HEADERS + self.headers
                await self.send({"type": "http.response.start", "status": 200, "headers": headers})
            except Exception as e:
                raise ClientGone from e

    async def fail(self, error: RouterError) -> None:
        """End a stream that has started (or is about to) with `error` + `response.failed` + `[DONE]`."""
        translator = self.translator
        if translator.status != "in_progress":
            return
        code = error.code or "upstream_error"
        out = translator.fail(error.message, code=code, type=error.type)
        self.log["error_code"] = code
        await self.end(out)

    async def end(self, out: bytes) -> None:
        """Send the last frames of a stream; a record to store is written before its terminal event goes out (the
        frames before `[DONE]`; with MESSAGES framing, the last message of a response that has ended)."""
        if self.pinging is not None:
            await self.pinging
        self.sending = True
        await self.start()
        sse = self.framing != MESSAGES
        if self.on_end is not None and (out.endswith(DONE) if sse else self.translator.status != "in_progress"):
            on_end, self.on_end = self.on_end, None  # (it refers to this exchange: no cycle left behind)
            if not await on_end():
                # Not stored after all (the store failed): the terminal event says `"store": false`.
                restated = self.translator.mark_unstored()
                if restated:
                    cut = out.rfind(b"event: response.") if sse else out.rfind(b"\n", 0, len(out) - 1) + 1
                    out = out[:cut] + restated
        if self.ending is not None:
            await self.ended()
        await self.body(out, more=False)
        self.delivered = True

    async def ended(self) -> None:
        """Run `ending` (once)."""
        ending, self.ending = self.ending, None
        if ending is not None:
            await ending()

    async def body(self, data: bytes, *, more: bool) -> None:
        if self.framing == MESSAGES:
            await self._messages(data)
            return
        try:
            await self.send({"type": "http.response.body", "body": data, "more_body": more})
        except Exception as e:
            raise ClientGone from e
        self.writes += 1

    async def _messages(self, data: bytes) -> None:
        """MESSAGES framing: each event (a line of `data`) as one WebSocket text message, each send awaited (a
        client that reads slowly holds the work back, as an HTTP body's sends do)."""
        send = self.send
        try:
            for line in data.split(b"\n"):
                if line:
                    await send({"type": "websocket.send", "text": line.decode()})
        except Exception as e:
            raise ClientGone from e
        self.writes += 1

    def timeout_error(self) -> RouterError:
        """The error for the timeout that fired (`timeout` is set)."""
        if self.timeout == "shutdown":
            return shutting_down()
        timeouts = self.provider.timeouts
        if self.timeout == "first_event":
            return upstream_timeout(self.provider.name, "first_event", timeouts.first_event)
        return upstream_timeout(self.provider.name, "idle", timeouts.idle)


class Pump:
    """Runs exchanges: the upstream call, the translation and the sending, under the worker's clock."""

    def __init__(
        self,
        clock: Clock,
        metrics: Metrics,
        transport: Callable[[], StreamTransport],
        save: Callable[[Exchange, bytes | None], Awaitable[bool]],
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.transport = transport
        self.save = save

    async def run(self, ex: Exchange, receive: Receive) -> int:
        """Run a request's exchange to its end and answer the client; returns the HTTP status."""
        task = asyncio.current_task()
        work: asyncio.Task[None] | None = None
        # The work runs in the request's own task where that is a plain asyncio task, which the clock and the
        # watcher can cancel; Granian's "rust" task implementation gives tasks whose `cancel` does nothing.
        if task is not None and type(task).cancel is TASK_CANCEL:
            ex.cancel = task.cancel
        else:
            work = asyncio.ensure_future(self.work(ex))
            ex.cancel = work.cancel
        clock = self.clock
        watcher = Watcher(receive, lambda: clock.stop(ex, "client_gone"))
        clock.time(ex)
        exc: BaseException | None = None
        try:
            try:
                if work is None:
                    await self.work(ex)
                else:
                    # (Awaiting the task itself would hand Granian's task implementation a cancelled future
                    # to resume with, which it does not: the request hung.)
                    await asyncio.wait((work,))
                    if work.cancelled():
                        raise asyncio.CancelledError
                    failure = work.exception()
                    if failure is not None:
                        raise failure
            except asyncio.CancelledError:
                if ex.stop is None:  # not ours: the request itself is cancelled
                    raise
                if work is None and task is not None:
                    uncancel(task)
            except Exception as e:
                exc = e
            finally:
                clock.untime(ex)
                watcher.cancel()
            if ex.ping is not None or ex.pinging is not None:  # (a coroutine call less for most requests)
                await self._after_ping(ex)
            return await self._answer(ex, exc)
        finally:
            if work is not None:
                work.cancel()
            if ex.upstream is not None:
                with contextlib.suppress(Exception):
                    await ex.upstream.aclose()

    @staticmethod
    async def _after_ping(ex: Exchange) -> None:
        if ex.ping is not None:  # a keep-alive in flight: it ends before anything else is sent
            ex.ping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ex.ping
        if ex.pinging is not None:  # (a keep-alive cancelled before it began)
            if not ex.pinging.done():
                ex.pinging.set_result(None)
            ex.pinging = None

    async def _answer(self, ex: Exchange, exc: BaseException | None) -> int:
        """How the exchange's work ended becomes what the client gets: an error status before the stream started,
        the stream's in-band ending after, or the whole response."""
        if ex.stop == "client_gone" and not ex.delivered:
            # The client went away (a keep-alive that cannot be sent says so too).
            ex.log["error_code"] = "client_disconnected"
            raise ClientGone
        if ex.timeout == "client_write" and ex.stop == "timeout":
            # The client reads nothing: nothing more can be sent to it, not even an error event.
            ex.log["error_code"] = "client_write_timeout"
            raise ClientGone
        if exc is not None:
            if isinstance(exc, ClientGone):
                raise ClientGone
            if isinstance(exc, RouterError) and not ex.started:
                raise exc
            error_log.error("request %s failed", ex.translator.response_id, exc_info=exc)
            return await self._fail(ex, internal_error())
        if ex.timeout is not None and ex.translator.status == "in_progress":
            if ex.timeout != "shutdown":
                self.metrics.upstream_error(ex.provider.name, f"{ex.timeout}_timeout")
            return await self._fail(ex, ex.timeout_error())
        if ex.error is not None:
            self.metrics.upstream_error(ex.provider.name, ex.error.code or "error")
            raise ex.error
        if ex.result is not None:
            body = ex.result
            if not await self.save(ex, ex.result):  # (the store failed: the body says `"store": false`)
                ex.translator.mark_unstored()
                body = ex.translator.response_json()
            if ex.client_view:
                body = ex.translator.client_response_json()
            if ex.ending is not None:
                await ex.ended()
            return await send_json(ex.send, 200, body, ex.headers)
        return 200

    @staticmethod
    async def _fail(ex: Exchange, error: RouterError) -> int:
        """`error` as the answer: its status before the stream started, in-band (`error`, `response.failed`) after."""
        if not ex.started:
            raise error
        await ex.fail(error)
        return 200

    async def work(self, ex: Exchange) -> None:
        """Open the upstream and pump its answer through the translator to the client (or into `ex.result`)."""
        if ex.plan is not None:  # hosted tools: several upstream calls and the tools' items (`ferroute.tools.loop`)
            from ferroute.tools.loop import run_loop

            await run_loop(self, ex)
            return
        if ex.failover is not None:  # a route, or retries: attempts until one gets its first content out
            await self._attempts(ex, ex.failover)
            return
        attempt = start_attempt(ex)  # (None when tracing is off)
        try:
            ex.upstream = upstream = await self.open(ex, None if attempt is None else attempt.headers)
        except RouterError as e:
            if attempt is not None:
                attempt.end(e)
            if ex.started:  # keep-alives already went out: the failure goes in-band
                self.metrics.upstream_error(ex.provider.name, e.code or "error")
                await ex.fail(e)
            else:
                ex.error = e
            return
        translator = ex.translator
        if upstream.body is not None:  # a whole JSON body where a stream was asked for
            try:
                out = translator.feed_whole(upstream.body)
            except _core.UpstreamError:
                if not ex.stream:
                    raise malformed_answer(ex.provider.name) from None
                await ex.fail(malformed_answer(ex.provider.name))
                return
            if ex.stream:
                await ex.end(out)
            else:
                ex.result = whole_result(translator.response_json(), translator)
            return
        assert upstream.chunks is not None
        if not ex.stream:
            await self._collect(ex, upstream.chunks)
        elif ex.framing == MESSAGES:
            await self._stream_messages(ex, upstream.chunks)
        else:
            await self._stream(ex, upstream.chunks)

    async def open(self, ex: Exchange, headers: list[tuple[bytes, bytes]] | None = None) -> Upstream:
        """Open the exchange's upstream request (`headers`: a trace's `traceparent`). One whose reasoning blob the
        upstream rejects (it came from another key of the same provider, one rotated since) goes once more without
        any blob: the reasoning's text stays."""
        upstream, ex.request = await self._open(ex, ex.provider, ex.request, ex.upstream_model, headers)
        return upstream

    async def _open(
        self,
        ex: Exchange,
        provider: Provider,
        request: ResponsesRequest,
        upstream_model: str,
        headers: list[tuple[bytes, bytes]] | None,
    ) -> tuple[Upstream, ResponsesRequest]:
        """`open` for `request` at `provider`: the upstream, and the request it was sent (without blobs, if the
        first try's were rejected)."""
        try:
            return await provider.open(request, upstream_model, self.transport(), headers=headers), request
        except RouterError as e:
            if e.code != "invalid_encrypted_content":
                raise
            stripped = for_provider(request, provider.name, everything=True)
            if stripped is request:
                raise
        ex.log["reasoning_dropped"] = True
        return await provider.open(stripped, upstream_model, self.transport(), headers=headers), stripped

    @staticmethod
    async def _collect(ex: Exchange, chunks: AsyncIterator[bytes]) -> None:
        """A whole response: every read fed, nothing sent until the end."""
        translator = ex.translator
        feed = translator.feed
        try:
            async for chunk in chunks:
                ex.reads += 1
                feed(chunk)
        except httpx.TimeoutException:
            ex.timeout = "first_event" if ex.translator.upstream_events == 0 else "idle"
            return
        except httpx.HTTPError:
            pass  # the translator's `finish` says whether the stream was cut
        translator.finish()
        ex.result = whole_result(translator.response_json(), translator)

    async def _stream(self, ex: Exchange, chunks: AsyncIterator[bytes]) -> None:
        """The hot path: one call into Rust per upstream read, one ASGI send per non-empty output. Output that ends
        with `[DONE]` goes through `ex.end` (the record is stored first)."""
        translator = ex.translator
        feed = translator.feed
        send = ex.send
        ended = False
        try:
            async for chunk in chunks:
                ex.reads += 1
                rest = None
                if not ex.started and len(chunk) > FIRST_PIECE:
                    # A big first read (the upstream had much of the answer ready): its first events go out
                    # before the rest is translated.
                    chunk, rest = chunk[:FIRST_PIECE], chunk[FIRST_PIECE:]
                while True:
                    out = feed(chunk)
                    if out.endswith(DONE):
                        ended = True
                        await ex.end(out)
                        break
                    if out:
                        if ex.pinging is not None:  # never two sends at once: wait for the keep-alive
                            await ex.pinging
                        ex.sending = True
                        if not ex.started:
                            await ex.start()
                        try:
                            await send({"type": "http.response.body", "body": out, "more_body": True})
                        except Exception as e:
                            raise ClientGone from e
                        ex.sending = False
                        ex.writes += 1
                    if rest is None:
                        break
                    chunk, rest = rest, None
                if ended:
                    break
        except httpx.TimeoutException:
            ex.timeout = "first_event" if ex.translator.upstream_events == 0 else "idle"
            return
        except httpx.HTTPError:
            self.metrics.upstream_error(ex.provider.name, "connection_lost")
        if ended:
            await finish_body(chunks)
        else:
            await ex.end(translator.finish())

    async def _stream_messages(self, ex: Exchange, chunks: AsyncIterator[bytes]) -> None:
        """`_stream` for MESSAGES framing (a WebSocket): the response has ended when the translator's status says
        so (there is no `[DONE]`); that last output goes through `ex.end` (the record is stored first)."""
        translator = ex.translator
        feed = translator.feed
        ended = False
        try:
            async for chunk in chunks:
                ex.reads += 1
                out = feed(chunk)
                if translator.status != "in_progress":
                    ended = True
                    await ex.end(out)
                    break
                if out:
                    ex.sending = True
                    await ex.start()
                    await ex.body(out, more=True)
                    ex.sending = False
        except httpx.TimeoutException:
            ex.timeout = "first_event" if translator.upstream_events == 0 else "idle"
            return
        except httpx.HTTPError:
            self.metrics.upstream_error(ex.provider.name, "connection_lost")
        if ended:
            await finish_body(chunks)
        else:
            await ex.end(translator.finish())

    # --- routes and retries: attempts until the first content -----------------------------------------------------

    async def _attempts(self, ex: Exchange, failover: Failover) -> None:
        """Try the failover's targets in turn until one gets content to the client (or, not streaming, answers):
        an attempt that fails before that (an error before the first byte, a late first event, an in-band error as
        the upstream's first event, a stream that ends with nothing) is retried or moved to the next target, and
        the client sees nothing of it (at most the start events, which the next attempt's translator goes on from).
        Once content is out, a failure ends the response as on the plain path. A route with `hedge_after` races a
        second target beside an attempt that is slow to its first content (`_race`)."""
        route = failover.route
        hedging = route is not None and route.hedge_after is not None
        while True:
            failure = await (self._race(ex, failover) if hedging else self._tracked(ex, failover))
            if failure is None:
                return
            if not await self._follow(ex, failover, failure):
                return
            # A translator of the next target's dialect for the same response.
            assert ex.remake is not None
            previous = ex.translator
            ex.translator = ex.remake(ex.provider, ex.preamble)
            carry_usage(previous, ex.translator)  # (tokens an attempt that failed was charged are the response's too)

    async def _follow(self, ex: Exchange, failover: Failover, failure: Failure) -> bool:
        """After an attempt failed before its content: the next attempt's target on the exchange (its provider,
        upstream model and request), once the wait due before it is over (True); or, when no attempt is left, the
        failure answered as without failover (False). The caller makes the next attempt's translator. An error that
        another attempt would meet as well (an upstream's 4xx but 429: a hedged leg's) goes no further."""
        error = failure.error
        following = failover.after(error, time.monotonic()) if error.retryable else None
        if following is None:
            await self._give_up(ex, failure)
            return False
        following_target, wait = following
        self.metrics.upstream_error(ex.provider.name, error.code or "error")
        log = ex.log
        log["attempts"] = log.get("attempts", 1) + 1
        failed = f"{ex.upstream_model}:{ex.provider.name}"  # (the target whose failure goes on)
        self.metrics.retry(failed, following_target.name, error.code or "error")
        if wait > 0:
            ex.tooling = True  # (the upstream timeouts wait meanwhile; keep-alives go on)
            try:
                await asyncio.sleep(wait)
            finally:
                ex.tooling = False
        ex.provider = following_target.provider
        ex.upstream_model = following_target.upstream_model
        if ex.context is not None:
            ex.request = for_provider(ex.context, ex.provider.name)
        log["provider"] = ex.provider.name
        log["target"] = following_target.name
        ex.reads = 0
        ex.attempt_began = time.monotonic()
        return True

    async def _tracked(self, ex: Exchange, failover: Failover) -> Failure | None:
        """One attempt at the failover's current target (`_attempt`) with the target's bookkeeping: its circuit, its
        requests in flight, the clock's first-event timeout as a failure. None once it answered."""
        route = failover.route
        target = failover.target
        probe = target.breaker.enter(time.monotonic()) if route is not None else False
        target.enter()
        verdict = False
        try:
            try:
                failure = await self._attempt(ex, failover)
            except asyncio.CancelledError:
                timeout = self._timed_out(ex)
                if timeout is None:
                    raise
                failure = Failure(timeout, timeout=True)
            verdict = True
            if failure is not None:
                if ex.trace is not None and ex.trace.attempt is not None:
                    ex.trace.attempt.end(failure.error)  # (its span says how it failed, not how the next one went)
                if route is not None:
                    target.breaker.failed(time.monotonic(), failure.error.code or "error")
                upstream, ex.upstream = ex.upstream, None
                await _close(upstream)
            return failure
        finally:
            target.leave()
            if not verdict and route is not None:
                target.breaker.abandon(probe)

    def _timed_out(self, ex: Exchange, before: int = 0) -> RouterError | None:
        """The work was cancelled: when by the clock's first-event timeout, before any content (any item past the
        first `before`: a tool loop's listings are the router's), the timeout's error (the attempt failed, the
        request goes on: the task is uncancelled and timed again); else None."""
        if ex.stop != "timeout" or ex.timeout != "first_event" or ex.translator.output_items > before:
            return None
        error = ex.timeout_error()
        task = asyncio.current_task()
        if task is not None:
            uncancel(task)
        ex.stop = ex.timeout = None
        self.clock.resume(ex)
        return error

    # --- hedging: a second target raced beside a slow first one ----------------------------------------------------

    async def _race(self, ex: Exchange, failover: Failover) -> Failure | None:
        """`_tracked` for a route with `hedge_after`: the attempt reads its upstream until its first content (sending
        nothing); if none has come after `hedge_after` seconds, the next target (`Failover.hedge`) starts beside it.
        The first leg to get content answers: its output goes out and its stream goes on; the other is cancelled
        at once (its connection closed), and the tokens it was charged are the response's too. A leg that fails
        leaves the other running; when every leg failed, the last failure goes on as one attempt's would."""
        route = failover.route
        assert route is not None
        lead = self._leg(ex, failover.target, ex.provider, ex.upstream_model, ex.request, ex.translator, failover.tries)
        winner, chosen = await self.race(
            ex, route, lead, lambda leg: self._until_content(ex, leg), lambda: self._hedge(ex, failover), carry_usage
        )
        self._adopt(ex, chosen)
        if winner is None:
            return chosen.failure
        if ex.trace is not None and winner.attempt is not None:
            ex.trace.attempt = winner.attempt  # (ended with the response, as the plain path's)
        return await self._won(ex, winner)

    async def race(
        self,
        ex: Exchange,
        route: Route,
        lead: Leg,
        until_content: Callable[[Leg], Awaitable[Failure | None]],
        hedge: Callable[[], Leg | None],
        carry: Callable[[Translator, Translator], None],
        before: int = 0,
    ) -> tuple[Leg | None, Leg]:
        """The race of `_race` and of a tool loop's call (`Loop._race`): `lead` read by `until_content`; when it has
        no content `hedge_after` seconds after the attempt began, `hedge()`'s leg beside it (if any). The first leg
        to get content wins; the others are cancelled (`_leg_lost`) or failed (`_leg_failed`), and each one's tokens
        are carried (`carry(spent, into)`) into the leg that goes on. Returns the winner (None when every leg
        failed) and the leg that goes on: the winner, or the last to fail. `before`: the items that are not the
        call's content (a loop's earlier ones), for the first-event timeout. The winner's target is marked healthy
        and its time to content learnt."""
        assert route.hedge_after is not None
        legs = [lead]
        running: dict[asyncio.Future[Failure | None], Leg] = {asyncio.ensure_future(until_content(lead)): lead}
        winner: Leg | None = None
        failed: Leg | None = None  # the last leg that failed
        hedge_at: float | None = ex.attempt_began + route.hedge_after
        try:
            try:
                while running and winner is None:
                    wait = None if hedge_at is None else max(0.0, hedge_at - time.monotonic())
                    done, _ = await asyncio.wait(running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        hedge_at = None
                        second = hedge()
                        if second is not None:
                            legs.append(second)
                            running[asyncio.ensure_future(until_content(second))] = second
                        continue
                    for task in done:
                        leg = running.pop(task)
                        leg.failure = task.result()
                        if leg.failure is None:
                            if winner is None:
                                winner = leg
                        else:
                            failed = leg
                            await self._leg_failed(leg)
            except asyncio.CancelledError:
                timeout = self._timed_out(ex, before)
                if timeout is None:
                    raise
                for task, leg in running.items():  # every leg still waiting failed by it
                    task.cancel()
                    await asyncio.wait((task,))
                    leg.failure = Failure(timeout, timeout=True)
                    failed = leg
                    await self._leg_failed(leg)
                running.clear()
        finally:
            if running:  # (cancelled and awaited: a leg's upstream is known before it is closed)
                for task in running:
                    task.cancel()
                await asyncio.wait(running)
            for leg in legs:
                if leg is not winner and leg.failure is None:  # lost (or the request ended first): cancelled
                    await self._leg_lost(ex, route.name, leg, abandoned=winner is None)
        chosen = winner or failed
        assert chosen is not None
        for leg in legs:
            if leg is not chosen:
                carry(leg.translator, chosen.translator)
            if leg.hedge:
                won = leg is winner
                self.metrics.hedge(route.name, leg.target.name, "won" if won else "failed" if leg.failure else "lost")
        if winner is not None:  # (its target is healthy, and its time to content known)
            winner.target.breaker.succeeded()
            winner.target.observe(time.monotonic() - winner.began)
        return winner, chosen

    def _leg(
        self,
        ex: Exchange,
        target: Target,
        provider: Provider,
        upstream_model: str,
        request: ResponsesRequest,
        translator: Translator,
        retry: int,
        *,
        hedge: bool = False,
    ) -> Leg:
        now = time.monotonic()
        probe = target.breaker.enter(now)
        target.enter()
        attempt = start_attempt(
            ex, retry, target.name, provider=provider, upstream_model=upstream_model, beside=True
        )  # (None when tracing is off)
        return Leg(target, provider, upstream_model, request, translator, ex.client_view, now, probe, hedge, attempt)

    def _hedge(self, ex: Exchange, failover: Failover) -> Leg | None:
        """The hedge: the next target's leg, or None when there is none (or no budget)."""
        now = time.monotonic()
        target = failover.hedge(now)
        if target is None:
            return None
        provider = target.provider
        request = for_provider(ex.context, provider.name) if ex.context is not None else ex.request
        assert ex.remake is not None
        client_view = ex.client_view
        translator = ex.remake(provider, ex.preamble)  # (it sets `client_view` for its provider: kept by the leg)
        leg = self._leg(ex, target, provider, target.upstream_model, request, translator, 0, hedge=True)
        ex.client_view = client_view
        ex.attempt_began = now  # (the first-event timeout runs from the newest leg's start)
        ex.log["hedged"] = target.name
        return leg

    async def _until_content(self, ex: Exchange, leg: Leg) -> Failure | None:
        """A leg's upstream opened and read until its first content (or its end), its output kept in `leg.out`;
        None when content came, else the `Failure`."""
        translator = leg.translator
        try:
            leg.upstream, leg.request = await self._open(
                ex, leg.provider, leg.request, leg.upstream_model, None if leg.attempt is None else leg.attempt.headers
            )
        except RouterError as e:
            return Failure(e)
        failure = await read_until(ex, leg, _has_content, _finish)
        if failure is not None:
            return failure
        if translator.status == "failed":
            # Failed before content, or a whole body where the client streams nothing: another attempt may answer.
            whole = leg.upstream is not None and leg.upstream.body is not None
            if not translator.output_items or (whole and not ex.stream):
                return Failure(_failed(translator), leg.out)
        return None

    @staticmethod
    async def _leg_failed(leg: Leg) -> None:
        failure = leg.failure
        assert failure is not None
        leg.target.leave()
        leg.target.breaker.failed(time.monotonic(), failure.error.code or "error")
        if leg.attempt is not None:
            leg.attempt.end(failure.error)
        upstream, leg.upstream = leg.upstream, None
        await _close(upstream)

    async def _leg_lost(self, ex: Exchange, route: str, leg: Leg, *, abandoned: bool) -> None:
        """A leg cancelled: another delivered first (or the request ended first: `abandoned`)."""
        leg.target.leave()
        leg.target.breaker.abandon(leg.probe)
        if leg.attempt is not None:
            leg.attempt.end(asyncio.CancelledError())
        upstream, leg.upstream = leg.upstream, None
        await _close(upstream)
        if abandoned and leg.hedge:
            self.metrics.hedge(route, leg.target.name, "abandoned")
        elif not abandoned:
            ex.log["hedge_cancelled"] = leg.target.name

    @staticmethod
    def _adopt(ex: Exchange, leg: Leg) -> None:
        """The exchange goes on with `leg`: its provider, request, translator and upstream."""
        ex.provider = leg.provider
        ex.upstream_model = leg.upstream_model
        ex.request = leg.request
        ex.translator = leg.translator
        ex.client_view = leg.client_view
        ex.upstream = leg.upstream
        ex.log["provider"] = leg.provider.name
        ex.log["target"] = leg.target.name

    async def _won(self, ex: Exchange, winner: Leg) -> Failure | None:
        """The winner's output goes out and its upstream's answer is read on, as `_attempt` goes on after content
        (not streaming: a response that fails after all still goes on to another attempt, nothing was sent)."""
        try:
            translator = winner.translator
            upstream = winner.upstream
            assert upstream is not None
            if upstream.body is not None:
                if ex.stream:
                    await ex.end(winner.out)
                else:
                    ex.result = translator.response_json()
                return None
            assert upstream.chunks is not None
            chunks = upstream.chunks
            if not ex.stream:
                if translator.status == "in_progress":
                    await _feed_all(ex, chunks)
                if translator.status == "failed":
                    ex.upstream = None
                    await _close(upstream)
                    return Failure(_failed(translator))
                ex.result = translator.response_json()
                return None
            await self._stream_on(ex, winner.out, chunks)
            return None
        finally:
            winner.target.leave()

    async def _attempt(self, ex: Exchange, failover: Failover) -> Failure | None:
        """One attempt at the failover's current target: None once it answered (its content went out, or its whole
        response is ready), or the `Failure` that lets the request go on."""
        retry = failover.tries
        attempt = start_attempt(ex, retry, failover.target.name)  # (None when tracing is off)
        try:
            ex.upstream = upstream = await self.open(ex, None if attempt is None else attempt.headers)
        except RouterError as e:
            if attempt is not None:
                attempt.end(e)
            if e.retryable:
                return Failure(e)
            if ex.started:
                self.metrics.upstream_error(ex.provider.name, e.code or "error")
                await ex.fail(e)
            else:
                ex.error = e
            return None
        translator = ex.translator
        if upstream.body is not None:  # a whole JSON body where a stream was asked for
            try:
                out = translator.feed_whole(upstream.body)
            except _core.UpstreamError:
                return Failure(malformed_answer(ex.provider.name))
            if translator.status == "failed" and (not ex.stream or not translator.output_items):
                return Failure(_failed(translator), out)
            self._content(ex, failover)
            if ex.stream:
                await ex.end(out)
            else:
                ex.result = translator.response_json()
            return None
        assert upstream.chunks is not None
        chunks = upstream.chunks
        if not ex.stream:
            await _feed_all(ex, chunks)
            if translator.status == "failed":  # (nothing went to the client: any failure may go on)
                return Failure(_failed(translator))
            self._content(ex, failover)
            ex.result = translator.response_json()
            return None
        # Streaming: until the first content, the start events go out and a failure goes on.
        feed = translator.feed
        out = b""
        try:
            async for chunk in chunks:
                ex.reads += 1
                out = feed(chunk)
                if translator.output_items or translator.status != "in_progress":
                    break
                if out:
                    await self._relay(ex, out)
                    ex.preamble = True
                    out = b""
            else:
                out = translator.finish()
        except httpx.HTTPError as e:
            return Failure(upstream_error_from(ex.provider.name, e))
        if translator.status == "failed" and not translator.output_items:
            return Failure(_failed(translator), out)
        self._content(ex, failover)
        await self._stream_on(ex, out, chunks)
        return None

    async def _stream_on(self, ex: Exchange, out: bytes, chunks: AsyncIterator[bytes]) -> None:
        """A streamed attempt has its first content in `out`: it goes out, and the rest of the upstream's answer
        after it (as on the plain path)."""
        if ex.translator.status != "in_progress":  # (the whole answer came in the first reads)
            await ex.end(out)
            await finish_body(chunks)
            return
        if out:
            await self._relay(ex, out)
        if ex.framing == MESSAGES:
            await self._stream_messages(ex, chunks)
        else:
            await self._stream(ex, chunks)

    @staticmethod
    def _content(ex: Exchange, failover: Failover) -> None:
        """The attempt answered: its target is healthy, and its time to first content is known."""
        target = failover.target
        if failover.route is not None:
            target.breaker.succeeded()
            target.observe(time.monotonic() - ex.attempt_began)

    @staticmethod
    async def _relay(ex: Exchange, out: bytes) -> None:
        if ex.pinging is not None:  # never two sends at once: wait for the keep-alive
            await ex.pinging
        ex.sending = True
        await ex.start()
        await ex.body(out, more=True)
        ex.sending = False

    async def _give_up(self, ex: Exchange, failure: Failure) -> None:
        """No attempt is left: the last failure answers the request, as it would have without failover."""
        error = failure.error
        if failure.out is not None:  # an in-band failure: the translator's own ending (or its whole response)
            if ex.stream:
                await ex.end(failure.out)
            else:
                ex.result = whole_result(ex.translator.response_json(), ex.translator)
        elif failure.timeout:
            ex.timeout = "first_event"  # (answered as the plain path answers a late first event)
        elif ex.started:
            self.metrics.upstream_error(ex.provider.name, error.code or "error")
            await ex.fail(error)
        else:
            ex.error = error


@dataclass(slots=True, eq=False)
class Leg:
    """One of a hedged attempt's legs (`Pump._race`): a target's upstream call, read until its first content."""

    target: Target
    provider: Provider
    upstream_model: str
    request: ResponsesRequest
    translator: Translator
    client_view: bool  # the exchange's `client_view` with this leg's provider
    began: float
    probe: bool  # the probe of the target's open circuit
    hedge: bool  # started beside the first (counted in `ferroute_upstream_hedges_total`)
    attempt: Attempt | None = None  # its span when tracing is on
    upstream: Upstream | None = None
    out: bytes = b""  # what its translator wrote until its first content (sent if it wins)
    failure: Failure | None = None  # how it failed (None: it has not, or it got content)
    dropped: bool = False  # its request went once more without reasoning blobs (the upstream refused one)


async def _close(upstream: Upstream | None) -> None:
    """Close an upstream answer that is not read to its end (its connection goes: that stops the upstream)."""
    if upstream is not None:
        with contextlib.suppress(Exception):
            await upstream.aclose()


async def _feed_all(ex: Exchange, chunks: AsyncIterator[bytes]) -> None:
    """The rest of a whole (not streamed) answer fed to the exchange's translator, then its end (which says whether
    the answer was cut)."""
    translator = ex.translator
    try:
        async for chunk in chunks:
            ex.reads += 1
            translator.feed(chunk)
    except httpx.HTTPError:
        pass
    translator.finish()


async def read_until(
    ex: Exchange, leg: Leg, reached: Callable[[Translator], bool], end: Callable[[Translator], bytes]
) -> Failure | None:
    """A raced leg's upstream answer (`leg.upstream`, open) fed to its translator until `reached(translator)` or
    the stream's end (then `end(translator)`), what it wrote kept in `leg.out`; a whole JSON body is fed whole. The
    failure of a read that broke or a body that is not the dialect's, else None (the caller judges the rest)."""
    translator, upstream = leg.translator, leg.upstream
    assert upstream is not None
    if upstream.body is not None:  # a whole JSON body where a stream was asked for
        try:
            leg.out = translator.feed_whole(upstream.body)
        except _core.UpstreamError:
            return Failure(malformed_answer(leg.provider.name))
        return None
    assert upstream.chunks is not None
    feed = translator.feed
    out: list[bytes] = []
    try:
        async for chunk in upstream.chunks:
            ex.reads += 1
            out.append(feed(chunk))
            if reached(translator):
                break
        else:
            out.append(end(translator))
    except httpx.HTTPError as e:
        return Failure(upstream_error_from(leg.provider.name, e))
    leg.out = b"".join(out)
    return None


def _has_content(translator: Translator) -> bool:
    return bool(translator.output_items) or translator.status != "in_progress"


def _finish(translator: Translator) -> bytes:
    return translator.finish()


def carry_usage(spent: Translator, into: Translator, base: tuple[int, int, int, int] | None = None) -> None:
    """Tokens an upstream call charged (`spent`'s, a failed or cancelled attempt) counted in `into`'s response. With
    `base` (the earlier turns' usage, which `spent` took over too: a raced tool-loop call's leg), only what `spent`
    added to it, and nothing where that is nothing."""
    spent_usage = spent.usage
    if spent_usage is None:
        return
    usage = list(spent_usage)
    if base is not None:
        usage = [max(0, now - then) for now, then in zip(usage, base, strict=True)]
        if not any(usage):
            return
    into.add_usage(input_tokens=usage[0], output_tokens=usage[1], cached_tokens=usage[2], reasoning_tokens=usage[3])


@dataclass(slots=True)
class Failure:
    """An attempt that failed before its first content: the error, and (an in-band failure) the frames the
    translator wrote for it, sent only if no attempt is left."""

    error: RouterError
    out: bytes | None = None
    timeout: bool = False  # the clock's first-event timeout


def _failed(translator: Translator) -> RouterError:
    """A failed response's error (the upstream's in-band error), as an error another attempt may not meet."""
    response = translator.response_json()
    error = (json.loads(response).get("error") or {}) if response else {}
    failure = upstream_failed(error.get("message"), error.get("code"))
    failure.retryable = True
    return failure


def whole_result(response: bytes, translator: Translator) -> bytes:
    """A whole response; a failed one is a 502 (nothing has gone to the client yet)."""
    # (The translator's status, not the bytes: an item of the response, a hosted call's, may say `"status":"failed"`.)
    if translator.status == "failed":
        error = (json.loads(response).get("error") or {}) if response else {}
        raise upstream_failed(error.get("message"), error.get("code"))
    return response


async def finish_body(chunks: AsyncIterator[bytes]) -> None:
    """Read what the upstream sends after `[DONE]` (the end of its body, so that its connection can be kept
    alive), for a moment at most: the client has its answer, and an upstream that never ends its body
    only costs its connection (closed when the exchange ends)."""

    async def drain() -> None:
        async for _ in chunks:
            pass

    with contextlib.suppress(Exception):
        await asyncio.wait_for(drain(), _DRAIN_AFTER_DONE)

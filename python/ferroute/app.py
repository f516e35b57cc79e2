"""The ASGI application: parse, route, stream bytes.

Plain ASGI, no framework. A streaming request costs, per upstream read, one call into Rust
(`translator.feed`) and one ASGI `send` of whatever it returned; Python never sees a token.

State (issue #4): with `store` on, the request's input items and the final response bytes from Rust
are written to the store (`ferroute.store`) before `data: [DONE]` goes out; `previous_response_id`
and `item_reference` are resolved against the caller's tenant before anything goes upstream.

Each `POST /v1/responses` runs its work (open the upstream, pump its bytes through the translator) in
the request's own task, with no task beside it: the pending `receive()` (a future under Granian) has a
callback that cancels the work at once on `http.disconnect` (which closes the upstream request), and one
clock per worker (a `call_later` chain, `App._clock`) enforces every exchange's first-event, idle and
client-write timeouts and starts `: ping` keep-alives while an upstream is silent. (Three tasks per
request before: 30 µs of event-loop CPU each, micro-benchmark, and a task start on the way to the
first event.)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pydantic_core

from ferroute import _core
from ferroute._transport import StreamTransport
from ferroute._types import Message, Receive, Scope, Send
from ferroute.config import Settings, StoreConfig, load_settings
from ferroute.errors import RouterError, invalid_request, not_implemented
from ferroute.logs import flush_all, log_line
from ferroute.metrics import Metrics
from ferroute.models import ItemReference, ReasoningItem, ResponsesRequest, parse_request
from ferroute.providers import Provider, Router, Translator, Upstream, build_providers
from ferroute.store import ANONYMOUS, Record, StoreError, open_store, tenant_of
from ferroute.store.crypto import ReasoningCipher, SealError, seal_item
from ferroute.store.items import (
    OUTPUT_ITEMS,
    derives_items,
    find_in,
    normalize,
    output_ids,
    record_items,
    response_of,
    to_index,
    to_models,
)

access_log = logging.getLogger("ferroute.access")
error_log = logging.getLogger("ferroute.error")

_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_PING = b": ping\n\n"
_DONE = b"data: [DONE]\n\n"
_DRAIN_AFTER_DONE = 0.1  # seconds the upstream's body end is awaited after its `[DONE]`
_TERMINAL = (b"event: response.completed\n", b"event: response.incomplete\n", b"event: response.failed\n")
_UNFINISHED = ("queued", "in_progress")
# A big first upstream read (an answer the upstream had ready) is fed in two: its first this many bytes
# (~9 chat.completion.chunk events), sent at once, then the rest. Measured at concurrency 1 with 200-event
# answers (A/B, 3 x 400 requests each): added TTFE p50 -0.15 ms, router CPU +~50 µs per request.
_FIRST_PIECE = 2048


class _ClientGone(Exception):
    """The client went away (an ASGI `send` failed, or `http.disconnect` arrived)."""


@dataclass(slots=True, eq=False)  # (compared and hashed by identity: the clock keeps a set of them)
class _Exchange:
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
    # after the upstream request then, not on the way to it (`App._fill_input`).
    input_to_store: list[Any] | None = None
    saved: bool = False
    on_end: Callable[[], Awaitable[None]] | None = None  # writes `record`; run before `[DONE]` is sent
    # Reasoning items' `encrypted_content` as the client sees it: sealed (include), or taken out (an upstream's own).
    seal: Callable[[bytes], bytes] | None = None  # on stream frames
    seal_body: Callable[[bytes], bytes] | None = None  # on a whole response object
    cancel_requested: bool = False  # background: a cancel arrived at this process
    # Stopping the work (the clock's timeouts, the client's disconnect): `cancel` cancels the task running it.
    cancel: Callable[[], Any] | None = None
    stop: str | None = None  # why the work was cancelled: "client_gone" or "timeout" (None: it was not)
    done: bool = False  # the work has ended (nothing cancels it any more)
    ping: asyncio.Task[None] | None = None  # a keep-alive being sent
    # The clock's view of the exchange (see App._check).
    seen: int = -1  # `reads` at the last tick
    quiet_since: float = 0.0
    pinged: float = 0.0
    written: int = -1  # `writes` when the current send was first seen pending
    sent_seen: int = -1  # `writes` at the last tick (the keep-alive interval runs from the client's last bytes)
    stuck_since: float = 0.0

    async def start(self) -> None:
        if not self.started:
            self.started = True
            self.first_event_at = time.monotonic()
            try:
                await self.send({"type": "http.response.start", "status": 200, "headers": _SSE})
            except Exception as e:
                raise _ClientGone from e

    async def fail(self, kind: str, code: str, message: str) -> None:
        """End a stream that has started (or is about to) with `error` + `response.failed` + `[DONE]`."""
        translator = self.translator
        if translator.status != "in_progress":
            return
        out = translator.fail(message, code=code, type=kind)
        self.log["error_code"] = code
        await self.end(out)

    async def end(self, out: bytes) -> None:
        """Send the last frames of a stream; a record to store is written before `[DONE]` goes out."""
        if self.pinging is not None:
            await self.pinging
        self.sending = True
        await self.start()
        if self.seal is not None:
            out = self.seal(out)
        if self.on_end is not None and out.endswith(_DONE):
            try:
                await self.body(out[: -len(_DONE)], more=True)
            finally:
                on_end, self.on_end = self.on_end, None  # (it refers to this exchange: no cycle left behind)
                await on_end()  # also when the client has gone: the response did end
            out = _DONE
        await self.body(out, more=False)

    async def body(self, data: bytes, *, more: bool) -> None:
        try:
            await self.send({"type": "http.response.body", "body": data, "more_body": more})
        except Exception as e:
            raise _ClientGone from e
        self.writes += 1


# Seconds into an exchange before the client's disconnect is watched (see `_Watcher`).
WATCH_AFTER = 0.05
# See App.startup.
_GC_YOUNG_THRESHOLD = 50_000
_TASK_CANCEL = asyncio.Task.cancel


class App:
    """The router as an ASGI application."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings(None)
        self.providers = build_providers(self.settings)
        self.router = Router(self.providers, self.settings.server.default_provider)
        self.api_keys = [key.encode() for key in self.settings.server.api_keys]
        self.tenants = {key: tenant_of(key) for key in self.api_keys}
        self.metrics = Metrics()
        self.store_config = self.settings.store or StoreConfig()
        self.store = open_store(self.store_config)
        self.store_errors: dict[str, int] = {}
        self.cipher, generated = ReasoningCipher.from_env(self.store_config.encryption_key_env)
        if generated:
            error_log.warning(
                "$%s is not set: reasoning.encrypted_content uses a key made up by this process; blobs will not "
                "open after a restart or on another instance (set the variable on every instance)",
                self.store_config.encryption_key_env,
            )
        self._jobs: dict[str, _Exchange] = {}  # background responses this process runs
        self.transport: StreamTransport | None = None
        self.draining = False
        self.aborting = False
        self._streams: set[asyncio.Task[Any]] = set()
        server = self.settings.server
        timeouts = [p.timeouts for p in self.providers.values()]
        shortest = min(
            [server.keepalive_interval]
            + [t.idle for t in timeouts]
            + [t.first_event for t in timeouts]
            + [t.client_write for t in timeouts]
        )
        self.tick = max(0.05, min(1.0, shortest / 4))
        self._timed: set[_Exchange] = set()  # exchanges the clock watches
        self._clock_handle: asyncio.TimerHandle | None = None
        self._clock_loop: asyncio.AbstractEventLoop | None = None

    # --- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def startup(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Once per worker, on its event loop's thread, before the first request."""
        self._transport()
        self._watch_signals(loop or asyncio.get_running_loop())
        # Everything alive now (modules, the app, pydantic's schemas) lives as long as the worker: keep it
        # out of the collector's full passes. Measured under 600 non-streaming requests/s: a gen-2
        # collection paused the worker 18-24 ms before, 2-4 ms after.
        gc.collect()
        gc.freeze()
        # A request allocates thousands of container objects that live until its upstream answers: with
        # CPython's default young-generation threshold (700) they are traversed again and again while they
        # wait, and under overload (more requests waiting) the collector took 26% of the event loop's
        # samples (py-spy, 700 non-streaming requests/s offered, sqlite store); with 50,000, none.
        # Request-scoped garbage is freed by reference counting either way; only cycles wait longer.
        gc.set_threshold(_GC_YOUNG_THRESHOLD, 20, 20)

    def _transport(self) -> StreamTransport:
        if self.transport is None:
            # StreamTransport: one body piece per upstream socket read (not per HTTP chunk, i.e. per
            # upstream event) and no httpcore pool. Measured (bench.router_overhead, A/B back to back, same
            # release core): router CPU per 200-event request 10.3 ms -> 1.8 ms; 256 streams burst
            # 82.9 -> 4.65 µs/event (11.9k -> 214k events/s), paced 151 -> 54 µs/event.
            self.transport = StreamTransport(max_keepalive=256, keepalive_expiry=60)
        return self.transport

    def _watch_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start draining when the worker is told to stop.

        Granian stops a worker by signal and then waits for its in-flight requests (up to its kill
        timeout) before the shutdown hook runs, which is too late to end streams cleanly. So on
        SIGTERM/SIGINT new requests get 503, and streams still running `shutdown_grace` seconds later
        are ended with `response.failed`. The Python-level handler is chained: Granian's own, registered
        with `loop.add_signal_handler`, still runs (the loop learns of the signal through its wakeup fd,
        on asyncio and uvloop alike). Only in the main thread, where Python delivers signals."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if not callable(previous):  # nobody handles it (the default ends the process; nothing to drain)
                continue

            def chained(number: int, frame: Any, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.begin_drain)
                previous(number, frame)

            signal.signal(signum, chained)

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().call_later(self.settings.server.shutdown_grace, self._abort)

    def _abort(self) -> None:
        self.aborting = True

    async def shutdown(self) -> None:
        """Let in-flight streams finish up to `shutdown_grace` seconds, then close the upstream client."""
        self.draining = True
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=self.settings.server.shutdown_grace)
        # Past the deadline: the clock ends each response with `response.failed` (or a 503) at its next tick.
        self.aborting = True
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=self.tick + 2)
        for task in set(self._streams):
            task.cancel()
        if self.transport is not None:
            await self.transport.aclose()
            self.transport = None
        with contextlib.suppress(Exception):
            await self.store.close()
        flush_all(access_log)  # (a forked worker exits without logging.shutdown)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        began = time.monotonic()
        log: dict[str, Any] = {"method": method, "path": path}
        status = 500
        try:
            if path == "/v1/responses":
                if method != "POST":
                    raise RouterError(405, "use POST /v1/responses", code="method_not_allowed")
                tenant = self._authorize(scope)
                status = await self.responses(scope, receive, send, log, began, tenant)
            elif path == "/healthz":
                status = await _send_json(send, 200, b'{"status":"ok"}')
            elif path == "/metrics":
                body = (self.metrics.render() + self._store_metrics()).encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                status = 200
            elif path == "/v1/models":
                self._authorize(scope)
                status = await _send_json(send, 200, self._models())
            elif path.startswith("/v1/responses/"):
                tenant = self._authorize(scope)
                status = await self.stored(scope, send, method, path[len("/v1/responses/") :], tenant)
            else:
                raise RouterError(404, f"no route {method} {path}", type="not_found", code="not_found")
        except RouterError as e:
            status = await _send_error(send, e)
            log["error_code"] = e.code
        except _ClientGone:
            status = 499
        except Exception:
            error_log.exception("unhandled error in %s %s", method, path)
            with contextlib.suppress(Exception):
                status = await _send_error(
                    send, RouterError(500, "internal error in the router", type="server_error", code="internal_error")
                )
        finally:
            log["status"] = status
            log["duration_ms"] = round((time.monotonic() - began) * 1000, 3)
            if access_log.isEnabledFor(logging.INFO):
                log_line(access_log, pydantic_core.to_json(log).decode())  # (json.dumps: 4.5x the time)
            if path == "/v1/responses":
                self.metrics.request(log.get("provider", ""), status, bool(log.get("stream")))

    def _authorize(self, scope: Scope) -> str:
        """The caller's tenant (a hash of its key; one anonymous tenant without auth), or a 401."""
        if not self.api_keys:
            return ANONYMOUS
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        token = token.strip()
        # Compare with every key (no early exit) so timing says nothing about which matched.
        ok = False
        for key in self.api_keys:
            ok |= hmac.compare_digest(token, key)
        if scheme.lower() != b"bearer" or not token or not ok:
            raise RouterError(
                401,
                "missing or invalid API key: send Authorization: Bearer <key>",
                type="authentication_error",
                code="invalid_api_key",
            )
        return self.tenants[bytes(token)]

    def _models(self) -> bytes:
        data = [
            {"id": f"{model}:{name}", "object": "model", "created": 0, "owned_by": name}
            for name, provider in self.providers.items()
            for model in provider.models()
        ]
        return json.dumps({"object": "list", "data": data}).encode()

    # --- POST /v1/responses ----------------------------------------------------------------------

    async def responses(
        self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any], began: float, tenant: str = ANONYMOUS
    ) -> int:
        if self.draining:
            raise RouterError(503, "the router is shutting down", type="server_error", code="shutting_down")
        limits = self.settings.limits
        body = await _read_body(scope, receive, limits.max_body_bytes)
        request = parse_request(body, max_depth=limits.max_json_depth, max_input_items=limits.max_input_items)
        log["model"] = request.model
        log["stream"] = bool(request.stream)
        store = request.store if request.store is not None else self.store_config.default_store
        if request.background:
            if not store:
                raise invalid_request("a background response is stored: it cannot have store false", "store")
            if request.stream:
                raise not_implemented("streaming a background response", "stream")
        provider, upstream_model = self.router.resolve(request.model)
        log["provider"] = provider.name
        upstream_request, record, input_to_store = await self._prepare(request, tenant, store)
        translator = provider.translator(body, model=request.model, store=store)
        log["response_id"] = translator.response_id
        exchange = _Exchange(
            send=send,
            request=upstream_request,
            provider=provider,
            upstream_model=upstream_model,
            translator=translator,
            stream=bool(request.stream),
            began=began,
            log=log,
            tenant=tenant,
            record=record,
            input_to_store=input_to_store,
        )
        if record is not None:
            record.id = translator.response_id

            async def on_end() -> None:
                await self._save(exchange)

            exchange.on_end = on_end
        if request.include and "reasoning.encrypted_content" in request.include:
            cache: dict[str, str] = {}
            exchange.seal = lambda out: _reasoning_frames(out, lambda item: seal_item(self.cipher, tenant, item, cache))
            exchange.seal_body = lambda body: _reasoning_body(body, lambda i: seal_item(self.cipher, tenant, i, {}))
        elif provider.keeps_encrypted_reasoning:
            # The upstream's own encrypted_content (Anthropic's signatures, OpenAI's blobs) stays in the stored
            # response (a later turn sends it back), but a client sees `encrypted_content` only when it asks.
            exchange.seal = lambda out: _reasoning_frames(out, _strip_encrypted)
            exchange.seal_body = lambda body: _reasoning_body(body, _strip_encrypted)
        if request.background:
            return await self._start_background(exchange)
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        if exchange.stream:
            self.metrics.in_flight += 1
        try:
            return await self._run(exchange, receive)
        finally:
            if exchange.stream:
                self.metrics.in_flight -= 1
                self.metrics.stream_done(provider.name, exchange.began, exchange.first_event_at)
            if task is not None:
                self._streams.discard(task)
            if record is not None and exchange.stream and exchange.started and not exchange.saved:
                # The stream began but did not end (the client went away): stored as cancelled.
                with contextlib.suppress(Exception):
                    await self._save(exchange, _cancelled(translator))
            log["status_detail"] = translator.status
            exchange.on_end = None  # (it refers to the exchange: a cycle the collector would have to find)

    async def _run(self, ex: _Exchange, receive: Receive) -> int:
        task = asyncio.current_task()
        work: asyncio.Task[None] | None = None
        # The work runs in the request's own task where that is a plain asyncio task, which the clock and the
        # watcher can cancel; Granian's "rust" task implementation gives tasks whose `cancel` does nothing.
        if task is not None and type(task).cancel is _TASK_CANCEL:
            ex.cancel = task.cancel
        else:
            work = asyncio.ensure_future(self._work(ex))
            ex.cancel = work.cancel
        watcher = _Watcher(receive, lambda: self._stop(ex, "client_gone"))
        self._time(ex)
        exc: BaseException | None = None
        try:
            try:
                if work is None:
                    await self._work(ex)
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
                    _uncancel(task)
            except Exception as e:
                exc = e
            finally:
                self._untime(ex)
                watcher.cancel()
            if ex.ping is not None:  # a keep-alive in flight: it ends before anything else is sent
                ex.ping.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ex.ping
            if ex.pinging is not None:  # (a keep-alive cancelled before it began)
                if not ex.pinging.done():
                    ex.pinging.set_result(None)
                ex.pinging = None
            if ex.stop == "client_gone":
                # The client went away (a keep-alive that cannot be sent says so too).
                ex.log["error_code"] = "client_disconnected"
                raise _ClientGone
            if ex.timeout == "client_write" and ex.stop == "timeout":
                # The client reads nothing: nothing more can be sent to it, not even an error event.
                ex.log["error_code"] = "client_write_timeout"
                raise _ClientGone
            if exc is not None:
                if isinstance(exc, _ClientGone):
                    raise _ClientGone
                if isinstance(exc, RouterError) and not ex.started:
                    raise exc
                error_log.error("request %s failed", ex.translator.response_id, exc_info=exc)
                if not ex.started:
                    raise RouterError(500, "internal error in the router", type="server_error", code="internal_error")
                await ex.fail("server_error", "internal_error", "internal error in the router")
                return 200
            if ex.timeout == "shutdown" and ex.translator.status == "in_progress":
                message = "the router is shutting down"
                if not ex.started:
                    raise RouterError(503, message, type="server_error", code="shutting_down")
                await ex.fail("server_error", "shutting_down", message)
                return 200
            if ex.timeout is not None and ex.translator.status == "in_progress":
                phase = "waiting for the first event" if ex.timeout == "first_event" else "no data between events"
                seconds = ex.provider.timeouts.first_event if ex.timeout == "first_event" else ex.provider.timeouts.idle
                message = f"provider {ex.provider.name!r} timed out ({phase}, {seconds:g} s)"
                self.metrics.upstream_error(ex.provider.name, f"{ex.timeout}_timeout")
                if not ex.started:
                    raise RouterError(504, message, type="model_error", code="upstream_timeout")
                await ex.fail("model_error", "upstream_timeout", message)
                return 200
            if ex.error is not None:
                self.metrics.upstream_error(ex.provider.name, ex.error.code or "error")
                raise ex.error
            if ex.result is not None:
                await self._save(ex, ex.result)
                body = ex.result
                if ex.seal_body is not None:
                    body = ex.seal_body(body)
                return await _send_json(ex.send, 200, body)
            return 200
        finally:
            if work is not None:
                work.cancel()
            if ex.upstream is not None:
                with contextlib.suppress(Exception):
                    await ex.upstream.aclose()

    async def _work(self, ex: _Exchange) -> None:
        try:
            ex.upstream = upstream = await ex.provider.open(ex.request, ex.upstream_model, self._transport())
        except RouterError as e:
            if ex.started:  # keep-alives already went out: the failure goes in-band
                self.metrics.upstream_error(ex.provider.name, e.code or "error")
                await ex.fail(e.type, e.code or "upstream_error", e.message)
            else:
                ex.error = e
            return
        translator = ex.translator
        if upstream.body is not None:  # a whole JSON body where a stream was asked for
            if not ex.stream:
                try:
                    converted = translator.convert(upstream.body)
                except _core.UpstreamError:
                    raise RouterError(
                        502,
                        f"provider {ex.provider.name!r} sent a malformed answer",
                        type="model_error",
                        code="upstream_error",
                    ) from None
                ex.result = _non_streaming_result(converted, translator)
                return
            upstream.chunks = _as_stream(ex.provider.whole_as_stream(upstream.body))
        assert upstream.chunks is not None
        feed = translator.feed
        send = ex.send
        seal = ex.seal
        if not ex.stream:
            try:
                async for chunk in upstream.chunks:
                    ex.reads += 1
                    feed(chunk)
            except httpx.TimeoutException:
                ex.timeout = "first_event" if ex.reads == 0 else "idle"
                return
            except httpx.HTTPError:
                pass  # the translator's `finish` says whether the stream was cut
            translator.finish()
            ex.result = _non_streaming_result(translator.response_json(), translator)
            return
        # The hot path: one call into Rust per upstream read, one ASGI send per non-empty output.
        # Output that ends with `[DONE]` goes through `ex.end` (the record is stored first).
        ended = False
        chunks = upstream.chunks
        try:
            async for chunk in chunks:
                ex.reads += 1
                if not ex.started and len(chunk) > _FIRST_PIECE:
                    # A big first read (the upstream had much of the answer ready): its first events go out
                    # before the rest is translated.
                    out = feed(chunk[:_FIRST_PIECE])
                    if out.endswith(_DONE):
                        ended = True
                        await ex.end(out)
                        break
                    await self._emit(ex, out)
                    chunk = chunk[_FIRST_PIECE:]
                out = feed(chunk)
                if out.endswith(_DONE):
                    ended = True
                    await ex.end(out)
                    break
                if out:
                    if seal is not None:  # only for reasoning's encrypted_content (include, or an upstream's own)
                        out = seal(out)
                    if ex.pinging is not None:  # never two sends at once: wait for the keep-alive
                        await ex.pinging
                    ex.sending = True
                    if not ex.started:
                        await ex.start()
                    try:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                    except Exception as e:
                        raise _ClientGone from e
                    ex.sending = False
                    ex.writes += 1
        except httpx.TimeoutException:
            ex.timeout = "first_event" if ex.reads == 0 else "idle"
            return
        except httpx.HTTPError:
            self.metrics.upstream_error(ex.provider.name, "connection_lost")
        if ended:
            await _finish_body(chunks)
        else:
            await ex.end(translator.finish())

    @staticmethod
    async def _emit(ex: _Exchange, out: bytes) -> None:
        """One ASGI send of translator output (as the hot loop in `_work` does inline), not the last."""
        if not out:
            return
        if ex.seal is not None:
            out = ex.seal(out)
        if ex.pinging is not None:
            await ex.pinging
        ex.sending = True
        if not ex.started:
            await ex.start()
        try:
            await ex.send({"type": "http.response.body", "body": out, "more_body": True})
        except Exception as e:
            raise _ClientGone from e
        ex.sending = False
        ex.writes += 1

    # --- the store ---------------------------------------------------------------------------------

    async def _prepare(
        self, request: ResponsesRequest, tenant: str, store: bool
    ) -> tuple[ResponsesRequest, Record | None, list[Any] | None]:
        """The request the upstream gets (earlier turns, references and sealed reasoning resolved), the record to
        store (None with `store` false) and the input items it will hold (see `_fill_input`). Everything that can
        fail here fails before the upstream."""
        items = request.items()
        special = request.previous_response_id is not None or any(
            isinstance(item, ItemReference) or (isinstance(item, ReasoningItem) and item.encrypted_content)
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
            else:
                resolved.append(item)
        ancestors: list[str] = []
        upstream = request
        if special:
            context: list[Any] = []
            if request.previous_response_id is not None:
                chain = await self._chain(tenant, request.previous_response_id)
                stored_items = [item for record in chain for item in record_items(record)]
                limit = self.settings.limits.max_input_items
                if len(stored_items) + len(resolved) > limit:
                    raise invalid_request(
                        f"the conversation has {len(stored_items) + len(resolved)} items with its earlier turns; the "
                        f"limit is {limit} (start a new chain, or send a shorter context in input)",
                        "previous_response_id",
                        code="context_too_long",
                    )
                context = to_models(stored_items)
                ancestors = [record.id for record in chain]
            upstream = request.model_copy(update={"input": context + resolved})
        if not store:
            return upstream, None, None
        record = Record(
            id="",
            response=b"",
            ancestors=ancestors,
            settings=pydantic_core.to_json({"model": request.model}),
        )
        return upstream, record, resolved

    @staticmethod
    def _fill_input(ex: _Exchange) -> None:
        """The record's input items, before its first write: normalized (with ids) and serialized here rather than
        in `_prepare`, which is on the way to the upstream request (`_prepare` 44 -> 25 µs p50 at concurrency 1,
        in-app timestamps, 3 x 600 requests interleaved)."""
        items, ex.input_to_store = ex.input_to_store, None
        record = ex.record
        if items is None or record is None:
            return
        stored = [normalize(item, record.id, OUTPUT_ITEMS + k) for k, item in enumerate(items)]
        record.input_items = pydantic_core.to_json(stored)  # (json.dumps + encode: ~6x the time)
        record.item_ids = to_index([item["id"] for item in stored], record.id) + record.item_ids

    async def _chain(self, tenant: str, previous_id: str) -> list[Record]:
        """The previous response and all its ancestors, oldest first: two store round trips at any depth."""
        try:
            [previous] = await self.store.get_many(tenant, [previous_id])
            if previous is None:
                raise _not_found(previous_id, "previous_response_id")
            earlier = await self.store.get_many(tenant, previous.ancestors) if previous.ancestors else []
        except StoreError as e:
            raise self._store_down("read", e) from None
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
        item = None
        try:
            derived = response_of(item_id)
            record = await self.store.get(tenant, derived) if derived else None
            item = find_in(record, item_id) if record is not None else None
            if item is None:
                response_id = await self.store.find_item(tenant, item_id)
                record = await self.store.get(tenant, response_id) if response_id else None
                item = find_in(record, item_id) if record is not None else None
        except StoreError as e:
            raise self._store_down("read", e) from None
        if item is None:
            raise RouterError(
                404, f"no stored item with id {item_id!r}", type="not_found", code="not_found", param=param
            )
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
        return to_models([data])[0]

    async def _save(self, ex: _Exchange, response: bytes | None = None) -> None:
        """Write the exchange's record (once). A failure is logged and counted; it never breaks the response."""
        record = ex.record
        if record is None or ex.saved:
            return
        ex.saved = True
        self._fill_input(ex)
        record.response = ex.translator.response_json() if response is None else response
        if not derives_items(record.id):  # (else the output items' ids are all made from it: nothing to index)
            record.item_ids = record.item_ids + to_index(output_ids(record.response), record.id)
        try:
            # Shielded: a client that leaves during the write does not cut it in half.
            await asyncio.shield(self.store.put(ex.tenant, record))
        except Exception as e:
            self._store_failed("write", e, record.id)

    def _store_failed(self, op: str, error: BaseException, response_id: str | None = None) -> None:
        self.store_errors[op] = self.store_errors.get(op, 0) + 1
        error_log.error("store %s failed (%s store)%s: %s", op, self.store.name,
                        f" for {response_id}" if response_id else "", error)  # fmt: skip

    def _store_down(self, op: str, error: BaseException) -> RouterError:
        self._store_failed(op, error)
        return RouterError(
            503,
            f"the response store ({self.store.name}) is unavailable; try again later",
            type="server_error",
            code="store_unavailable",
        )

    def _store_metrics(self) -> str:
        lines = [
            "# HELP ferroute_store_errors_total Response store failures by operation (read, write).",
            "# TYPE ferroute_store_errors_total counter",
        ]
        lines += [f'ferroute_store_errors_total{{op="{op}"}} {n}' for op, n in sorted(self.store_errors.items())]
        lines += [
            "# HELP ferroute_background_responses_running Background responses this process is running.",
            "# TYPE ferroute_background_responses_running gauge",
            f"ferroute_background_responses_running {len(self._jobs)}",
        ]
        return "\n".join(lines) + "\n"

    # --- /v1/responses/{id}… ---------------------------------------------------------------------

    async def stored(self, scope: Scope, send: Send, method: str, tail: str, tenant: str) -> int:
        response_id, _, action = tail.partition("/")
        if not response_id or action not in ("", "input_items", "cancel"):
            raise RouterError(404, f"no route {method} /v1/responses/{tail}", type="not_found", code="not_found")
        allowed = {"": ("GET", "DELETE"), "input_items": ("GET",), "cancel": ("POST",)}[action]
        if method not in allowed:
            raise RouterError(405, f"use {' or '.join(allowed)} here", code="method_not_allowed")
        if action == "" and method == "DELETE":
            try:
                deleted = await self.store.delete(tenant, response_id)
            except StoreError as e:
                raise self._store_down("delete", e) from None
            if not deleted:
                raise _not_found(response_id)
            job = self._jobs.get(response_id)
            if job is not None and job.tenant == tenant:
                job.cancel_requested = True
                job.record = None  # nothing more is written for it
            body = json.dumps({"id": response_id, "object": "response.deleted", "deleted": True}).encode()
            return await _send_json(send, 200, body)
        record = await self._get(tenant, response_id)
        if action == "input_items":
            return await _send_json(send, 200, _input_items_page(record, scope.get("query_string", b"")))
        body = record.response if action == "" else await self._cancel(tenant, record)
        if b'"encrypted_content":"' in body:  # (an upstream's own, e.g. Anthropic's signatures: kept, not shown)
            body = _reasoning_body(body, _strip_encrypted)
        return await _send_json(send, 200, body)

    async def _get(self, tenant: str, response_id: str) -> Record:
        try:
            record = await self.store.get(tenant, response_id)
        except StoreError as e:
            raise self._store_down("read", e) from None
        if record is None:
            raise _not_found(response_id)
        return record

    # --- background responses ----------------------------------------------------------------------

    async def _start_background(self, ex: _Exchange) -> int:
        """Store the response as `queued`, answer at once, and run it on in a task of this process."""
        record = ex.record
        assert record is not None
        queued = _with_status(ex.translator.response_json(), "queued")
        self._fill_input(ex)
        record.response = queued
        try:
            await self.store.put(ex.tenant, record)
        except StoreError as e:
            raise self._store_down("write", e) from None
        original_send = ex.send

        async def nowhere(message: Message) -> None:
            return None

        ex.send = nowhere
        ex.on_end = None
        job = asyncio.create_task(self._background(ex))
        self._jobs[record.id] = ex
        self._streams.add(job)

        def done(task: asyncio.Task[None]) -> None:
            self._streams.discard(task)
            self._jobs.pop(record.id, None)

        job.add_done_callback(done)
        return await _send_json(original_send, 200, queued)

    async def _background(self, ex: _Exchange) -> None:
        translator = ex.translator
        response_id = translator.response_id
        interval = self.store_config.background_interval
        work = asyncio.create_task(self._work(ex))
        ex.cancel = work.cancel
        self._time(ex)
        cancelled = False
        try:
            written = -1
            while True:
                done, _ = await asyncio.wait({work}, timeout=interval)
                if done:
                    break
                if ex.cancel_requested or await self._cancel_flag(ex.tenant, response_id):
                    cancelled = True
                    break
                if ex.reads != written and ex.record is not None:  # progress: the output so far
                    written = ex.reads
                    try:
                        await self.store.update_response(ex.tenant, response_id, translator.response_json())
                    except StoreError as e:
                        self._store_failed("write", e, response_id)
        except asyncio.CancelledError:  # the process is shutting down
            work.cancel()
            if translator.status == "in_progress":
                translator.fail("the router shut down before the response finished", code="shutting_down")
            with contextlib.suppress(Exception):
                await asyncio.shield(self._save(ex))
            raise
        finally:
            self._untime(ex)
            work.cancel()
            await asyncio.wait({work})
            if ex.upstream is not None:
                with contextlib.suppress(Exception):
                    await ex.upstream.aclose()
        if cancelled:
            await self._save(ex, _cancelled(translator))
            return
        failure = work.exception() if work.done() and not work.cancelled() else None
        if translator.status == "in_progress":
            if ex.timeout == "shutdown":
                translator.fail("the router shut down before the response finished", code="shutting_down")
            elif ex.timeout is not None:
                message = f"provider {ex.provider.name!r} timed out ({ex.timeout.replace('_', ' ')})"
                translator.fail(message, code="upstream_timeout", type="model_error")
            elif ex.error is not None:
                translator.fail(ex.error.message, code=ex.error.code or "upstream_error", type=ex.error.type)
            else:
                if failure is not None and not isinstance(failure, RouterError):
                    error_log.error("background response %s failed", response_id, exc_info=failure)
                translator.fail("internal error in the router", code="internal_error", type="server_error")
        await self._save(ex)

    async def _cancel_flag(self, tenant: str, response_id: str) -> bool:
        try:
            return await self.store.cancel_requested(tenant, response_id)
        except StoreError as e:
            self._store_failed("read", e, response_id)
            return False

    async def _cancel(self, tenant: str, record: Record) -> bytes:
        """Cancel a background response, wherever it runs: a flag in the store that its worker polls."""
        response = json.loads(record.response)
        if not response.get("background"):
            raise invalid_request("only a background response can be cancelled", code="not_background")
        if response.get("status") not in _UNFINISHED:
            return record.response
        job = self._jobs.get(record.id)
        if job is not None and job.tenant == tenant:
            job.cancel_requested = True
        try:
            await self.store.request_cancel(tenant, record.id)
        except StoreError as e:
            raise self._store_down("write", e) from None
        deadline = time.monotonic() + max(5.0, 4 * self.store_config.background_interval)
        latest = record
        while time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, self.store_config.background_interval))
            latest = await self._get(tenant, record.id)
            if json.loads(latest.response).get("status") not in _UNFINISHED:
                return latest.response
        # No worker answered (its process is gone): the router cancels the record itself.
        final = _with_status(latest.response, "cancelled")
        try:
            await self.store.update_response(tenant, record.id, final)
        except StoreError as e:
            raise self._store_down("write", e) from None
        return final

    # --- the clock: timeouts and keep-alives of every exchange -------------------------------------

    def _time(self, ex: _Exchange) -> None:
        """Put an exchange under the clock (until its work ends)."""
        ex.quiet_since = ex.pinged = ex.began
        ex.sent_seen = ex.writes
        self._timed.add(ex)
        loop = asyncio.get_running_loop()
        if self._clock_handle is None or self._clock_loop is not loop:
            self._clock_loop = loop
            self._clock_handle = loop.call_later(self.tick, self._clock)

    def _untime(self, ex: _Exchange) -> None:
        """The exchange's work has ended: the clock and the watcher no longer stop it."""
        ex.done = True
        self._timed.discard(ex)

    def _clock(self) -> None:
        """Every `tick` seconds while any exchange is timed: each one's checks (`_check`)."""
        now = time.monotonic()
        for ex in list(self._timed):
            try:
                self._check(ex, now)
            except Exception:  # noqa: PERF203  (one exchange must not stop the clock of the others)
                self._timed.discard(ex)
                error_log.exception("the clock failed on %s", ex.translator.response_id)
        loop = self._clock_loop
        self._clock_handle = loop.call_later(self.tick, self._clock) if self._timed and loop is not None else None

    def _stop(self, ex: _Exchange, reason: str) -> None:
        """Cancel an exchange's work (once, and never after it ended)."""
        if ex.done or ex.stop is not None or ex.cancel is None:
            return
        ex.stop = reason
        self._timed.discard(ex)
        ex.cancel()

    def _check(self, ex: _Exchange, now: float) -> None:
        """One tick of an exchange: the first-event, idle and client-write timeouts, shutdown, keep-alives."""
        timeouts = ex.provider.timeouts
        if self.aborting:
            ex.timeout = "shutdown"
            self._stop(ex, "timeout")
            return
        if ex.sending:
            # Waiting on the client, not the upstream: the upstream's clock stops meanwhile.
            ex.quiet_since = ex.pinged = now
            if ex.writes != ex.written:
                ex.written, ex.stuck_since = ex.writes, now
            elif now - ex.stuck_since >= timeouts.client_write:
                ex.timeout = "client_write"
                self._stop(ex, "timeout")
            return
        ex.written = -1
        if ex.writes != ex.sent_seen:  # the client got bytes: the keep-alive interval starts again
            ex.sent_seen = ex.writes
            ex.pinged = now
        if ex.reads != ex.seen:
            # (Only the idle timeout restarts: reads that give the client nothing, such as an upstream's own
            # pings or comments, are silence to it.)
            ex.seen = ex.reads
            ex.quiet_since = now
        if ex.seen <= 0:
            if now - ex.began >= timeouts.first_event:
                ex.timeout = "first_event"
                self._stop(ex, "timeout")
                return
        elif now - ex.quiet_since >= timeouts.idle:
            ex.timeout = "idle"
            self._stop(ex, "timeout")
            return
        keepalive = self.settings.server.keepalive_interval
        if (
            ex.stream
            and ex.ping is None
            and now - ex.pinged >= keepalive
            and ex.translator.status == "in_progress"
        ):  # fmt: skip
            ex.pinged = now
            ex.pinging = asyncio.get_running_loop().create_future()
            ex.ping = asyncio.ensure_future(self._ping(ex))

    async def _ping(self, ex: _Exchange) -> None:
        """Send one `: ping` keep-alive (the work waits for it before its next send)."""
        pinging = ex.pinging
        try:
            await ex.start()
            await ex.send({"type": "http.response.body", "body": _PING, "more_body": True})
        except Exception:
            self._stop(ex, "client_gone")
        finally:
            ex.ping = None
            ex.pinging = None
            if pinging is not None and not pinging.done():
                pinging.set_result(None)


def _non_streaming_result(response: bytes, translator: Translator) -> bytes:
    """A whole response; a failed one is a 502 (nothing has gone to the client yet)."""
    if translator.status == "failed" or b'"status":"failed"' in response[:400]:
        error = (json.loads(response).get("error") or {}) if response else {}
        raise RouterError(
            502,
            str(error.get("message") or "the upstream failed"),
            type="model_error",
            code=str(error.get("code") or "upstream_error"),
        )
    return response


def _reasoning_frames(out: bytes, change: Callable[[Any], bool]) -> bytes:
    """Stream frames with `change` applied to reasoning items (`output_item.done` and the terminal event's)."""
    if b"event: response.output_item.done\n" not in out and not any(t in out for t in _TERMINAL):
        return out
    frames = out.split(b"\n\n")
    for k, frame in enumerate(frames):
        item_done = frame.startswith(b"event: response.output_item.done\n") and b'"type":"reasoning"' in frame
        if not item_done and not frame.startswith(_TERMINAL):
            continue
        head, sep, data = frame.partition(b"\ndata: ")
        event = json.loads(data)
        if item_done:
            changed = change(event.get("item"))
        else:
            changed = _change_all((event.get("response") or {}).get("output"), change)
        if changed:
            frames[k] = head + sep + json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    return b"\n\n".join(frames)


def _reasoning_body(body: bytes, change: Callable[[Any], bool]) -> bytes:
    """A response object with `change` applied to its reasoning items."""
    data = json.loads(body)
    if _change_all(data.get("output"), change):
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return body


def _change_all(items: Any, change: Callable[[Any], bool]) -> bool:
    """`change` applied to every item (not only up to the first that changes); whether any changed."""
    changed = False
    for item in items or []:
        changed |= change(item)
    return changed


def _strip_encrypted(item: Any) -> bool:
    if isinstance(item, dict) and item.get("type") == "reasoning" and item.get("encrypted_content") is not None:
        item["encrypted_content"] = None
        return True
    return False


def _not_found(response_id: str, param: str | None = None) -> RouterError:
    """The one 404 for an id that never existed, was deleted, or belongs to another key."""
    return RouterError(404, f"no response with id {response_id!r}", type="not_found", code="not_found", param=param)


def _with_status(response: bytes, status: str) -> bytes:
    data = json.loads(response)
    data["status"] = status
    if status == "cancelled":
        data["error"] = None
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _cancelled(translator: Translator) -> bytes:
    """The response as it stands, closed and marked `cancelled` (the core knows no such ending)."""
    if translator.status == "in_progress":
        translator.fail("the response was cancelled", code="cancelled", type="server_error")
        return _with_status(translator.response_json(), "cancelled")
    return translator.response_json()


def _input_items_page(record: Record, query_string: bytes) -> bytes:
    query = parse_qs(query_string.decode("latin-1"))
    raw_limit = query.get("limit", ["20"])[-1]
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise invalid_request("limit must be an integer from 1 to 100", "limit")
    order = query.get("order", ["desc"])[-1]
    if order not in ("asc", "desc"):
        raise invalid_request("order must be asc or desc", "order")
    items: list[dict[str, Any]] = json.loads(record.input_items)
    if order == "desc":
        items.reverse()
    after = query.get("after", [None])[-1]
    if after is not None:
        position = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if position is None:
            raise invalid_request(f"after: no input item {after!r} in this response", "after")
        items = items[position + 1 :]
    page = items[:limit]
    for item in page:  # (reasoning items keep an upstream's own encrypted_content for later turns: not shown)
        _strip_encrypted(item)
    body = {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
    return json.dumps(body, ensure_ascii=False).encode()


async def _as_stream(stream: bytes) -> AsyncIterator[bytes]:
    """A whole body, made a stream of its dialect (`Provider.whole_as_stream`), as the one read the translator gets."""
    yield stream


async def _finish_body(chunks: AsyncIterator[bytes]) -> None:
    """Read what the upstream sends after `[DONE]` (the end of its body, so that its connection can be kept
    alive), for a moment at most: the client has its answer, and an upstream that never ends its body
    only costs its connection (closed when the exchange ends)."""

    async def drain() -> None:
        async for _ in chunks:
            pass

    with contextlib.suppress(Exception):
        await asyncio.wait_for(drain(), _DRAIN_AFTER_DONE)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = -1
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise invalid_request("invalid Content-Length header") from None
            if declared > limit:
                raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        # With the declared length read, the body is whole. (Granian sends a body as one message with
        # `more_body` and then an empty last one: waiting for that was a second hop from its Rust thread on the
        # way to the first event. The disconnect watcher takes it instead, beside the upstream's answer.)
        if not message.get("more_body", False) or size == declared:
            return b"".join(chunks)


def _too_large(limit: int) -> RouterError:
    return RouterError(413, f"the request body is larger than {limit} bytes", code="request_too_large")


class _Watcher:
    """Calls `on_disconnect` when `receive()` says `http.disconnect`, without a task of its own where the
    server's `receive()` is a future (Granian's is); a coroutine (other servers, the RSGI adapter) runs as
    a task. `cancel` stops watching.

    Watching starts `WATCH_AFTER` seconds into the exchange, so an exchange that ends sooner never asks: each
    `receive()` of Granian's goes through its Rust thread (a task there, and a cancel at the end), and the
    watcher's `receive`, `cancel` and callbacks were ~10% of the event loop's samples at 1,500 non-streaming
    requests/s (py-spy; two `receive` calls each, the first for the empty message Granian sends after the
    body). A client that leaves sooner is seen then (its upstream request runs at most that much longer);
    one that leaves while the answer streams is also seen by the failing `send`."""

    __slots__ = ("on_disconnect", "pending", "receive", "start")

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        self.receive = receive
        self.on_disconnect = on_disconnect
        self.pending: asyncio.Future[Message] | None = None
        self.start: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(WATCH_AFTER, self._first)

    def _first(self) -> None:
        self.start = None
        self._watch()

    def _watch(self) -> None:
        self.pending = pending = asyncio.ensure_future(self.receive())
        pending.add_done_callback(self._done)

    def _done(self, pending: asyncio.Future[Message]) -> None:
        if pending is not self.pending or pending.cancelled():
            return
        self.pending = None
        error = pending.exception()
        if error is not None or pending.result()["type"] == "http.disconnect":
            self.on_disconnect()
        else:  # (a message other than the disconnect: wait for the next one)
            self._watch()

    def cancel(self) -> None:
        if self.start is not None:
            self.start.cancel()
            self.start = None
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()


def _uncancel(task: asyncio.Task[Any]) -> None:
    """Undo a `cancel` the task has handled (Python 3.11+ counts them; `asyncio.timeout` reads the count)."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


async def _send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    await send({"type": "http.response.start", "status": status, "headers": _JSON + (headers or [])})
    await send({"type": "http.response.body", "body": body})
    return status


async def _send_error(send: Send, error: RouterError) -> int:
    return await _send_json(send, error.status, error.body(), error.headers)


def create_app() -> App:
    """Granian's factory target: settings from `FERROUTE_CONFIG` (set by `ferroute serve`)."""
    import os

    return App(load_settings(os.environ.get("FERROUTE_CONFIG") or None))

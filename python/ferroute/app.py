"""The ASGI application: parse, route, stream bytes.

Plain ASGI, no framework. A streaming request costs, per upstream read, one call into Rust
(`translator.feed`) and one ASGI `send` of whatever it returned; Python never sees a token.

Each `POST /v1/responses` runs three tasks: the work (open the upstream, pump its bytes through the
translator), a watcher that waits for `http.disconnect` (and cancels the work at once, which closes
the upstream request), and a ticker that enforces the first-event and idle timeouts and sends
`: ping` keep-alives while the upstream is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ferroute import _core
from ferroute._types import Message, Receive, Scope, Send
from ferroute.config import Settings, load_settings
from ferroute.errors import RouterError, invalid_request
from ferroute.metrics import Metrics
from ferroute.models import ResponsesRequest, parse_request
from ferroute.providers import Provider, Router, Upstream, build_providers

access_log = logging.getLogger("ferroute.access")
error_log = logging.getLogger("ferroute.error")

_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_PING = b": ping\n\n"


class _ClientGone(Exception):
    """The client went away (an ASGI `send` failed, or `http.disconnect` arrived)."""


@dataclass(slots=True)
class _Exchange:
    """One `POST /v1/responses` in flight."""

    send: Send
    request: ResponsesRequest
    provider: Provider
    upstream_model: str
    translator: _core.ChatCompletionsTranslator
    stream: bool
    began: float
    upstream: Upstream | None = None
    started: bool = False  # the 200 and its headers went out
    sending: bool = False  # the work is in an ASGI send (the ticker sends no keep-alive then)
    pinging: asyncio.Future[None] | None = None  # a keep-alive is being sent (the work waits for it)
    reads: int = 0  # upstream reads so far (the ticker's idleness clock)
    first_event_at: float | None = None
    timeout: str | None = None  # which timeout fired
    error: RouterError | None = None  # failed before the first byte
    result: bytes | None = None  # the non-streaming response body
    log: dict[str, Any] = field(default_factory=dict)

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
        if self.pinging is not None:
            await self.pinging
        self.sending = True
        await self.start()
        try:
            await self.send({"type": "http.response.body", "body": out, "more_body": False})
        except Exception as e:
            raise _ClientGone from e


class App:
    """The router as an ASGI application."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings(None)
        self.providers = build_providers(self.settings)
        self.router = Router(self.providers, self.settings.server.default_provider)
        self.api_keys = [key.encode() for key in self.settings.server.api_keys]
        self.metrics = Metrics()
        self.client: httpx.AsyncClient | None = None
        self.draining = False
        self.aborting = False
        self._streams: set[asyncio.Task[Any]] = set()
        server = self.settings.server
        timeouts = [p.timeouts for p in self.providers.values()]
        shortest = min([server.keepalive_interval] + [t.idle for t in timeouts] + [t.first_event for t in timeouts])
        self.tick = max(0.05, min(1.0, shortest / 4))

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
                self._client()
                self._watch_signals()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=60),
                follow_redirects=False,
                trust_env=False,
            )
        return self.client

    def _watch_signals(self) -> None:
        """Start draining when the worker is told to stop.

        Granian stops a worker by signal and then waits for its in-flight requests (up to its kill
        timeout) before the ASGI lifespan shutdown runs, which is too late to end streams cleanly. So
        its asyncio signal handlers are chained: on SIGTERM/SIGINT new requests get 503, and streams
        still running `shutdown_grace` seconds later are ended with `response.failed`. (Uses the loop's
        private `_signal_handlers`; on a loop without it, Granian's own behaviour applies.)"""
        loop = asyncio.get_running_loop()
        handlers = getattr(loop, "_signal_handlers", None)
        if not isinstance(handlers, dict):
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            original = handlers.get(signum)
            if original is None:
                continue

            def chained(original: Any = original) -> None:
                self.begin_drain()
                original._run()

            loop.add_signal_handler(signum, chained)

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
        # Past the deadline: each ticker ends its response with `response.failed` (or a 503) at its next tick.
        self.aborting = True
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=self.tick + 2)
        for task in set(self._streams):
            task.cancel()
        if self.client is not None:
            await self.client.aclose()
            self.client = None

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
                self._authorize(scope)
                status = await self.responses(scope, receive, send, log, began)
            elif path == "/healthz":
                status = await _send_json(send, 200, b'{"status":"ok"}')
            elif path == "/metrics":
                body = self.metrics.render().encode()
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                status = 200
            elif path == "/v1/models":
                self._authorize(scope)
                status = await _send_json(send, 200, self._models())
            elif path.startswith("/v1/responses/"):
                self._authorize(scope)
                raise RouterError(
                    404,
                    "stored responses are not available: this router has no response store yet (issue #4)",
                    type="not_found",
                    code="store_unavailable",
                )
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
                access_log.info(json.dumps(log, separators=(",", ":")))
            if path == "/v1/responses":
                self.metrics.request(log.get("provider", ""), status, bool(log.get("stream")))

    def _authorize(self, scope: Scope) -> None:
        if not self.api_keys:
            return
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

    def _models(self) -> bytes:
        data = [
            {"id": f"{model}:{name}", "object": "model", "created": 0, "owned_by": name}
            for name, provider in self.providers.items()
            for model in provider.models()
        ]
        return json.dumps({"object": "list", "data": data}).encode()

    # --- POST /v1/responses ----------------------------------------------------------------------

    async def responses(self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any], began: float) -> int:
        if self.draining:
            raise RouterError(503, "the router is shutting down", type="server_error", code="shutting_down")
        limits = self.settings.limits
        body = await _read_body(scope, receive, limits.max_body_bytes)
        request = parse_request(body, max_depth=limits.max_json_depth, max_input_items=limits.max_input_items)
        log["model"] = request.model
        log["stream"] = bool(request.stream)
        if request.previous_response_id is not None:
            raise invalid_request(
                "previous_response_id needs the response store, which this router does not have yet (issue #4); "
                "send the whole conversation in input instead",
                "previous_response_id",
                code="unsupported_parameter",
            )
        if request.background:
            raise invalid_request("background responses are not supported by this router yet", "background")
        provider, upstream_model = self.router.resolve(request.model)
        log["provider"] = provider.name
        # Nothing is stored until the state issue (#4) lands, so no response claims it was.
        translator = _core.ChatCompletionsTranslator(body, model=request.model, store=False)
        log["response_id"] = translator.response_id
        exchange = _Exchange(
            send=send,
            request=request,
            provider=provider,
            upstream_model=upstream_model,
            translator=translator,
            stream=bool(request.stream),
            began=began,
            log=log,
        )
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
            log["status_detail"] = translator.status

    async def _run(self, ex: _Exchange, receive: Receive) -> int:
        work = asyncio.create_task(self._work(ex))
        watcher = asyncio.create_task(_disconnected(receive))
        ticker = asyncio.create_task(self._tick(ex))
        tasks = {work, watcher, ticker}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:
                work.cancel()
            for task in tasks - {work}:
                task.cancel()
            await asyncio.wait(tasks)
            failures = {t: t.exception() for t in tasks if not t.cancelled()}  # (also marks them retrieved)
            if (watcher in done and work not in done) or failures.get(ticker) is not None:
                # The client went away (a keep-alive that cannot be sent says so too).
                ex.log["error_code"] = "client_disconnected"
                raise _ClientGone
            exc = failures.get(work)
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
                return await _send_json(ex.send, 200, ex.result)
            return 200
        finally:
            for task in tasks:
                task.cancel()
            if ex.upstream is not None:
                with contextlib.suppress(Exception):
                    await ex.upstream.aclose()

    async def _work(self, ex: _Exchange) -> None:
        try:
            ex.upstream = upstream = await ex.provider.open(ex.request, ex.upstream_model, self._client())
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
            upstream.chunks = _as_stream(upstream.body)
        assert upstream.chunks is not None
        feed = translator.feed
        send = ex.send
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
        try:
            async for chunk in upstream.chunks:
                ex.reads += 1
                out = feed(chunk)
                if out:
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
        except httpx.TimeoutException:
            ex.timeout = "first_event" if ex.reads == 0 else "idle"
            return
        except httpx.HTTPError:
            self.metrics.upstream_error(ex.provider.name, "connection_lost")
        out = translator.finish()
        if ex.pinging is not None:
            await ex.pinging
        ex.sending = True
        await ex.start()
        try:
            await send({"type": "http.response.body", "body": out, "more_body": False})
        except Exception as e:
            raise _ClientGone from e

    async def _tick(self, ex: _Exchange) -> None:
        """Timeouts and keep-alives; returns when a timeout fires."""
        timeouts = ex.provider.timeouts
        keepalive = self.settings.server.keepalive_interval
        loop_time = time.monotonic
        seen = -1
        quiet_since = ex.began
        pinged = ex.began
        while True:
            await asyncio.sleep(self.tick)
            now = loop_time()
            if self.aborting:
                ex.timeout = "shutdown"
                return
            if ex.reads != seen:
                seen = ex.reads
                quiet_since = pinged = now
                if seen > 0:
                    continue
            if seen <= 0:
                if now - ex.began >= timeouts.first_event:
                    ex.timeout = "first_event"
                    return
            elif now - quiet_since >= timeouts.idle:
                ex.timeout = "idle"
                return
            if ex.stream and not ex.sending and now - pinged >= keepalive and ex.translator.status == "in_progress":
                pinged = now
                ex.pinging = asyncio.get_running_loop().create_future()
                try:
                    await ex.start()
                    await ex.send({"type": "http.response.body", "body": _PING, "more_body": True})
                finally:
                    ex.pinging.set_result(None)
                    ex.pinging = None


def _non_streaming_result(response: bytes, translator: _core.ChatCompletionsTranslator) -> bytes:
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


async def _as_stream(body: bytes) -> AsyncIterator[bytes]:
    """A whole `chat.completion` body as the one-chunk stream the translator reads."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for choice in data.get("choices") or []:
            if isinstance(choice, dict) and "message" in choice:
                choice["delta"] = choice.pop("message")
        yield b"data: " + json.dumps(data).encode() + b"\n\ndata: [DONE]\n\n"
    else:
        yield b"data: {malformed upstream body}\n\n"


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
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
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> RouterError:
    return RouterError(413, f"the request body is larger than {limit} bytes", code="request_too_large")


async def _disconnected(receive: Receive) -> None:
    """Returns when the client disconnects."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


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

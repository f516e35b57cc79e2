"""The ASGI application: the route table, authentication, the one layer that turns errors into answers, the
access log, and `POST /v1/responses` (validate, route, resolve stored state, hand the exchange to the pump).

`App` is built from its parts (providers, store, cipher, transport); `build_app` wires them from `Settings`, so
tests can pass their own parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_core

from ferroute import _core
from ferroute._transport import StreamTransport
from ferroute._types import Message, Receive, Scope, Send
from ferroute.app import compaction, websocket
from ferroute.app.background import Background
from ferroute.app.clock import Clock
from ferroute.app.continuation import Continuation
from ferroute.app.exchange import SSE, Exchange, Framing, Pump
from ferroute.app.http import METRICS_HEADERS, BodyRead, ClientGone, read_body, send_error, send_json
from ferroute.app.records import Records
from ferroute.app.stored import StoredEndpoints
from ferroute.app.worker import HeapTrim, on_stop_signal, tune_collector
from ferroute.config import DEFAULTS_SOURCE, Settings, StoreConfig, load_settings
from ferroute.errors import (
    RouterError,
    internal_error,
    invalid_api_key,
    invalid_request,
    method_not_allowed,
    model_not_allowed,
    no_route,
    shutting_down,
)
from ferroute.logs import flush_all, log_line
from ferroute.metrics import METRICS_DIR_ENV, Metrics
from ferroute.models import ResponsesRequest, echo_settings, parse_json_object, parse_request_and_settings
from ferroute.providers import Provider, Translator, build_providers
from ferroute.routing.keys import ANONYMOUS_KEY, FILE_ENV, Key, KeyTable, Limiter, LocalLimits, RedisLimits, estimate
from ferroute.routing.reasoning import for_provider
from ferroute.routing.routes import Router
from ferroute.store import Store, open_store
from ferroute.store.crypto import ReasoningCipher
from ferroute.telemetry import Telemetry, enabled
from ferroute.tools.hosted import OnEvent, Tools, has_hosted_items, lower

access_log = logging.getLogger("ferroute.access")
error_log = logging.getLogger("ferroute.error")

# A route's handler: (scope, receive, send, the access log's fields, when the request began) -> the status answered.
Handler = Callable[[Scope, Receive, Send, dict[str, Any], float], Awaitable[int]]
_STORED = "/v1/responses/"


class App:
    """The router as an ASGI application."""

    def __init__(
        self,
        settings: Settings,
        *,
        providers: dict[str, Provider],
        store: Store,
        cipher: ReasoningCipher,
        transport: StreamTransport | None = None,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.router = Router(providers, settings.server.default_provider, settings.routes, settings.routing)
        self.keys = KeyTable(settings.server.api_keys, settings.keys)
        # Summed over the instance's workers through the directory `ferroute serve` makes (this process alone without).
        self.metrics = Metrics(settings.prices, os.environ.get(METRICS_DIR_ENV))
        if self.router.targets:
            self.metrics.gauge(
                "ferroute_upstream_circuit_open",
                "Whether a route target's circuit is open (1: in any worker) or closed (0).",
                ("target",),
                collect=self.router.circuits,
                aggregate="max",
            )
        self.store_config = settings.store or StoreConfig()
        self.limiter = limiter_for(self.keys, self.store_config)
        self.store = store
        self.cipher = cipher
        self.tools = Tools(
            settings.mcp, settings.mcp_servers, agents=settings.agents, explicit=settings.source != DEFAULTS_SOURCE
        )
        self.tools.run_agent = self.run_agent
        # Masked in whatever an upstream says back (its error messages), before a client, the store or a log sees it.
        self.secret_list = secrets_of(settings, providers) + self.tools.secrets()
        self.secrets = _core.Secrets(self.secret_list)
        # Tracing (`[telemetry]`): None when off, and then nothing of OpenTelemetry is imported. On, `respond` is
        # wrapped in the response's span (the tracer itself is made in each worker, at startup).
        self.telemetry: Telemetry | None = None
        if enabled(settings.telemetry):
            self.telemetry = Telemetry(settings.telemetry, self.secrets)
            self.respond = self.telemetry.traced(self.respond)  # type: ignore[method-assign]
        self.transport = transport  # (made at startup, on the worker's loop, when not given)
        self.draining = False
        self._streams: set[asyncio.Task[Any]] = set()
        server = settings.server
        timeouts = [p.timeouts for p in providers.values()]
        shortest = min(
            [server.keepalive_interval, server.body_read_timeout]
            + [t.idle for t in timeouts]
            + [t.first_event for t in timeouts]
            + [t.client_write for t in timeouts]
        )
        self.clock = Clock(Clock.tick_for(shortest), server.keepalive_interval)
        self.heap = HeapTrim()
        # `[store] on_error = "fail"`: a stored response's record is written before its upstream call, or a 503.
        self.fail_unstored = self.store_config.on_error == "fail"
        self.records = Records(store, self.store_config)
        self.pump = Pump(self.clock, self.metrics, self._transport, self.records.save)
        self.continuation = Continuation(self.records, cipher, settings.limits)
        self.background = Background(self.pump, self.clock, self.records, self.store_config, server.keepalive_interval)
        self.stored = StoredEndpoints(self.records, self.background)
        errors = self.records.errors
        self.metrics.counter(
            "ferroute_store_errors_total",
            "Response store failures by operation (read, write, heartbeat).",
            ("op",),
            collect=lambda: {(op,): n for op, n in errors.items()},
        )
        jobs = self.background.jobs
        self.metrics.gauge(
            "ferroute_background_responses_running",
            "Background responses the instance's workers are running.",
            collect=lambda: {(): len(jobs)},
        )
        self.routes: dict[str, Handler] = {
            "/v1/responses": self._responses,
            "/v1/responses/compact": self._compact,
            "/healthz": self._healthz,
            "/metrics": self._metrics,
            "/v1/models": self._models,
        }

    # --- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self.websocket(scope, receive, send)
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

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket connection: WebSocket mode on `GET /v1/responses` (`app.websocket`)."""
        await websocket.serve(self, scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One HTTP request: its route's handler, with every error answered here (and the access log line)."""
        path: str = scope["path"]
        method: str = scope["method"]
        began = time.monotonic()
        log: dict[str, Any] = {"method": method, "path": path}
        status = 500
        try:
            handler = self.routes.get(path)
            if handler is not None:
                status = await handler(scope, receive, send, log, began)
            elif path.startswith(_STORED):
                tenant = self._authorize(scope)
                status = await self.stored(scope, send, method, path[len(_STORED) :], tenant)
            else:
                raise no_route(method, path)
        except RouterError as e:
            status = await send_error(send, e)
            log["error_code"] = e.code
        except ClientGone:
            status = 499
            self.heap.soon()  # (what piled up for a client that stopped reading goes back to the system)
        except Exception:
            error_log.exception("unhandled error in %s %s", method, path)
            with contextlib.suppress(Exception):
                status = await send_error(send, internal_error())
        finally:
            log["status"] = status
            log["duration_ms"] = round((time.monotonic() - began) * 1000, 3)
            if access_log.isEnabledFor(logging.INFO):
                log_line(access_log, pydantic_core.to_json(log).decode())  # (json.dumps: 4.5x the time)
            if path == "/v1/responses":
                self.metrics.request(log.get("provider", ""), status, bool(log.get("stream")))

    def _authorize(self, scope: Scope) -> str:
        """The caller's tenant (a hash of its key; one anonymous tenant without auth), or a 401."""
        return self._identify(scope).tenant

    def _identify(self, scope: Scope) -> Key:
        """The caller's key (`ANONYMOUS_KEY` when no key is configured), or a 401."""
        if not self.keys.required:
            return ANONYMOUS_KEY
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        token = token.strip()
        key = self.keys.find(bytes(token)) if token else None
        if scheme.lower() != b"bearer" or key is None:
            raise invalid_api_key()
        return key

    # --- small routes ----------------------------------------------------------------------------

    async def _healthz(self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any], began: float) -> int:
        return await send_json(send, 200, b'{"status":"ok"}')

    async def _metrics(self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any], began: float) -> int:
        body = self.metrics.render().encode()
        await send({"type": "http.response.start", "status": 200, "headers": METRICS_HEADERS})
        await send({"type": "http.response.body", "body": body})
        return 200

    async def _models(self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any], began: float) -> int:
        self._authorize(scope)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "ferroute"} for name in self.router.models()]
        data += [
            {"id": f"{model}:{name}", "object": "model", "created": 0, "owned_by": name}
            for name, provider in self.providers.items()
            for model in provider.models()
        ]
        return await send_json(send, 200, json.dumps({"object": "list", "data": data}).encode())

    # --- POST /v1/responses ----------------------------------------------------------------------

    async def _responses(self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any], began: float) -> int:
        if scope["method"] != "POST":
            raise method_not_allowed("POST /v1/responses")
        key = self._identify(scope)
        log["key"] = key.name
        if self.draining:
            raise shutting_down()
        limits = self.settings.limits
        body = await self._read(scope, receive, began)
        request, echoed = parse_request_and_settings(
            body, max_depth=limits.max_json_depth, max_input_items=limits.max_input_items
        )
        if key.models is not None and not key.allows(request.model):
            raise model_not_allowed(key.name, request.model)
        return await self.respond_for(
            key, len(body), request, echoed, send, receive, log, began, trace_parent=scope["headers"]
        )

    async def _read(self, scope: Scope, receive: Receive, began: float) -> bytes:
        """A request's body, within `max_body_bytes` and `body_read_timeout`."""
        seconds = self.settings.server.body_read_timeout
        reading = BodyRead(began + seconds, seconds)
        self.clock.watch(reading)
        try:
            return await read_body(scope, receive, self.settings.limits.max_body_bytes, reading)
        finally:
            self.clock.unwatch(reading)

    async def _compact(self, scope: Scope, receive: Receive, send: Send, log: dict[str, Any], began: float) -> int:
        """`POST /v1/responses/compact` (`app.compaction`)."""
        if scope["method"] != "POST":
            raise method_not_allowed("POST /v1/responses/compact")
        key = self._identify(scope)
        log["key"] = key.name
        if self.draining:
            raise shutting_down()
        body = await self._read(scope, receive, began)
        data = parse_json_object(body, max_depth=self.settings.limits.max_json_depth)
        model = data.get("model")
        if key.models is not None and isinstance(model, str) and not key.allows(model):
            raise model_not_allowed(key.name, model)
        if key.limits is None:
            return await compaction.compact(self, data, key.tenant, send, receive, log, began)
        assert self.limiter is not None
        grant = await self.limiter.admit(key, estimate(len(body)))
        headers = grant.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and headers:
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        used: list[int] = []  # (the summarising call's tokens, settled in place of the estimate)
        try:
            return await compaction.compact(self, data, key.tenant, send_with_headers, receive, log, began, used)
        except RouterError as e:
            e.headers = e.headers + headers
            raise
        finally:
            await self.limiter.end(grant, used[0] if used else None)

    async def respond_for(
        self,
        key: Key,
        size: int,
        request: ResponsesRequest,
        echoed: dict[str, Any],
        send: Send,
        receive: Receive,
        log: dict[str, Any],
        began: float,
        *,
        framing: Framing = SSE,
        on_exchange: Callable[[Exchange], None] | None = None,
        trace_parent: Any = None,
    ) -> int:
        """`respond` for a client's key: under its tenant and, for a key with limits (`size`: the request body's
        bytes, whence its input tokens are guessed), admitted first (a 429 otherwise), its answer carrying the key's
        `x-ratelimit-*` headers, and ended (its slot freed, its tokens settled with the usage reported) when the
        response ends, before its last bytes go out; a background response's when it finishes."""
        if key.limits is None:
            return await self.respond(
                request, echoed, key.tenant, send, receive, log, began,
                framing=framing, on_exchange=on_exchange, trace_parent=trace_parent,
            )  # fmt: skip
        limiter = self.limiter
        assert limiter is not None
        grant = await limiter.admit(key, estimate(size))
        made: Exchange | None = None

        async def ending() -> None:
            usage = made.translator.usage if made is not None else None
            await limiter.end(grant, None if usage is None else usage[0] + usage[1])

        def on_made(ex: Exchange) -> None:
            nonlocal made
            made = ex
            if grant.headers:
                ex.headers = grant.headers
            ex.ending = ending
            if on_exchange is not None:
                on_exchange(ex)

        try:
            return await self.respond(
                request,
                echoed,
                key.tenant,
                send,
                receive,
                log,
                began,
                framing=framing,
                on_exchange=on_made,
                trace_parent=trace_parent,
            )
        except RouterError as e:
            e.headers = e.headers + grant.headers
            raise
        finally:
            if made is None:
                await limiter.end(grant, None)
            elif made.ending is not None:  # (not yet ended; a background job took it over if it started)
                await made.ended()

    async def respond(
        self,
        request: ResponsesRequest,
        echoed: dict[str, Any],
        tenant: str,
        send: Send,
        receive: Receive,
        log: dict[str, Any],
        began: float,
        *,
        depth: int = 0,
        framing: Framing = SSE,
        on_exchange: Callable[[Exchange], None] | None = None,
        trace_parent: Any = None,
    ) -> int:
        """A validated request answered on `send`: routed, its stored state resolved, its exchange run (`depth`: how
        deep in sub-agents' nested responses it is; 0 for a client's). `framing`: SSE (an HTTP response) or
        MESSAGES (a WebSocket's messages: `app.websocket`); `on_exchange` is given the exchange once it is made.
        `trace_parent`: the request's ASGI headers, whose W3C `traceparent` the response's span continues (read by
        the tracing wrapper, `ferroute.telemetry`, when tracing is on)."""
        log["model"] = request.model
        log["stream"] = bool(request.stream)
        store = request.store if request.store is not None else self.store_config.default_store
        if request.background and not store:
            raise invalid_request("a background response is stored: it cannot have store false", "store")
        upstream_request, record, input_to_store = await self.continuation.prepare(request, tenant, store)
        # (A continuation prefers the target that made the previous response: its reasoning blobs open there.)
        provider, upstream_model, failover = self.router.pick(request.model, began, upstream_request._previous_target)
        log["provider"] = provider.name
        context = upstream_request
        upstream_request = for_provider(upstream_request, provider.name)
        secrets = self.secrets
        plan = None
        if request.tools is not None or isinstance(upstream_request.input, list):
            # Hosted tools (the loop runs them), or a conversation that holds their items (which the upstream gets
            # as the function calls and results every dialect reads).
            items = upstream_request.items()
            plan = self.tools.plan(request, items, depth)
            if plan is not None:
                credentials = [value for server in plan.servers for value in server.headers.values()]
                if credentials:
                    secrets = _core.Secrets(self.secret_list + credentials)
            elif has_hosted_items(items):
                # (Every attempt's request is made from `context`: the items are lowered there.)
                context = context.model_copy(update={"input": lower(context.items(), None)})
                upstream_request = for_provider(context, provider.name)
        # What a client sees of reasoning items' `encrypted_content` is the writer's (`reasoning=`): sealed by the
        # router when asked for; an upstream's own (Anthropic's signatures, OpenAI's blobs) stays in the stored
        # response for later turns but is shown only when asked.
        sealed = request.include is not None and "reasoning.encrypted_content" in request.include
        if failover is None:
            cipher = self.cipher
            translator = _translator(provider, echoed, request.model, store, secrets, sealed, cipher, tenant, framing)
        else:  # (every attempt's translator writes the same response: its id and `created_at` are known now)
            created_at = int(time.time())
            translator = _translator(
                provider, echoed, request.model, store, secrets, sealed, self.cipher, tenant, framing,
                created_at=created_at,
            )  # fmt: skip
        log["response_id"] = translator.response_id
        exchange = Exchange(
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
            client_view=sealed or provider.keeps_encrypted_reasoning,
            plan=plan,
            tools_box=self.tools,
            secrets=secrets,
            framing=framing,
            failover=failover,
            context=context,
        )
        if failover is not None:
            cipher, first_id = self.cipher, translator.response_id

            def remake(target: Provider, started: bool) -> Translator:
                exchange.client_view = sealed or target.keeps_encrypted_reasoning
                return _translator(
                    target, echoed, request.model, store, secrets, sealed, cipher, tenant, framing,
                    response_id=first_id, created_at=created_at, started=started,
                )  # fmt: skip

            exchange.remake = remake
        if on_exchange is not None:
            on_exchange(exchange)
        if record is not None:
            record.id = translator.response_id
            save = self.records.save

            async def on_end() -> bool:
                return await save(exchange)

            exchange.on_end = on_end
            if self.fail_unstored and not request.background:
                await self.records.open_now(exchange)  # (a 503 if it cannot be written: nothing goes upstream)
        if request.background:
            return await self.background.start(exchange)
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        metrics = self.metrics
        if exchange.stream:
            metrics.in_flight += 1
            if record is not None and not self.fail_unstored:
                self.records.open(exchange)  # (written while the upstream request is on its way)
        try:
            return await self.pump.run(exchange, receive)
        finally:
            if exchange.stream:
                metrics.in_flight -= 1
                metrics.stream_done(exchange.provider.name, exchange.began, exchange.first_event_at)
            if depth == 0:  # (a sub-agent's tokens are in its parent's usage: `add_usage`)
                metrics.usage(
                    log.get("key", ""),
                    request.model,
                    exchange.translator.usage,
                    exchange.upstream_model,
                    exchange.provider.name,
                )
            if task is not None:
                self._streams.discard(task)
            if record is not None and exchange.stream and exchange.started and not exchange.saved:
                # The stream began but did not end (the client went away): stored as cancelled.
                with contextlib.suppress(Exception):
                    exchange.translator.cancel()
                    await self.records.save(exchange)
            elif record is not None and not exchange.started and not exchange.saved:
                # It ended before anything reached the client (an HTTP error answered it): no record is kept, and
                # one written at its creation (`on_error = "fail"`, or a stream's) goes.
                with contextlib.suppress(Exception):
                    await self.records.discard(exchange)
            log["status_detail"] = exchange.translator.status
            exchange.on_end = None  # (it refers to the exchange: a cycle the collector would have to find)

    async def run_agent(self, request: ResponsesRequest, tenant: str, depth: int, on_event: OnEvent) -> dict[str, Any]:
        """A sub-agent's nested response (`ferroute.tools`): streamed here, each event handed to `on_event` as it
        comes, stored like any other; returns the final response object. A request the router refuses before it
        streams (an unknown model, say) raises its `RouterError`."""
        parser = _core.ResponseEventParser()

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                for event in parser.feed(message["body"]):
                    on_event(event)

        async def receive() -> Message:  # (nobody to disconnect)
            await asyncio.get_running_loop().create_future()
            raise AssertionError("unreachable")

        data = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        log: dict[str, Any] = {"agent_depth": depth}
        await self.respond(request, echo_settings(data), tenant, send, receive, log, time.monotonic(), depth=depth)
        response = parser.response
        if response is None:
            raise internal_error()
        return response

    # --- the worker's life -----------------------------------------------------------------------

    def startup(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Once per worker, on its event loop's thread, before the first request."""
        self._transport()
        loop = loop or asyncio.get_running_loop()
        on_stop_signal(loop, self.begin_drain)
        self.metrics.start(loop)
        shared = self.metrics.shared
        if shared is not None and shared.handle is not None:  # (`ferroute serve`: the instance's directory)
            try:
                self.router.share(shared.directory, shared.name)
            except OSError:
                error_log.exception(
                    "routes' circuits (and least_busy's requests in flight) are kept in this worker alone"
                )
        if self.telemetry is not None:
            try:
                self.telemetry.start()
            except Exception:
                error_log.exception("tracing could not be started: responses are served without spans")
        tune_collector()  # (after tracing's start: the SDK's modules and objects are frozen with the rest)
        self.tools.warm_up()

    def _transport(self) -> StreamTransport:
        if self.transport is None:
            # StreamTransport: one body piece per upstream socket read (not per HTTP chunk, i.e. per
            # upstream event) and no httpcore pool. Measured (bench.router_overhead, A/B back to back, same
            # release core): router CPU per 200-event request 10.3 ms -> 1.8 ms; 256 streams burst
            # 82.9 -> 4.65 µs/event (11.9k -> 214k events/s), paced 151 -> 54 µs/event.
            self.transport = StreamTransport(max_keepalive=256, keepalive_expiry=60)
        return self.transport

    def begin_drain(self) -> None:
        """New requests get 503 from now on; streams still running `shutdown_grace` seconds later are ended."""
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().call_later(self.settings.server.shutdown_grace, self._abort)

    def _abort(self) -> None:
        self.clock.aborting = True

    async def shutdown(self) -> None:
        """Let in-flight streams finish up to `shutdown_grace` seconds, then close the upstream client."""
        self.draining = True
        running = self._streams | self.background.tasks
        if running:
            await asyncio.wait(running, timeout=self.settings.server.shutdown_grace)
        # Past the deadline: the clock ends each response with `response.failed` (or a 503) at its next tick.
        self.clock.aborting = True
        running = self._streams | self.background.tasks
        if running:
            await asyncio.wait(running, timeout=self.clock.tick + 2)
        for task in self._streams | self.background.tasks:
            task.cancel()
        if self.transport is not None:
            await self.transport.aclose()
            self.transport = None
        with contextlib.suppress(Exception):
            await self.tools.aclose()
        with contextlib.suppress(Exception):
            await self.store.close()
        self.metrics.stop()
        self.router.close()
        if self.limiter is not None:
            with contextlib.suppress(Exception):
                await self.limiter.aclose()
        if self.telemetry is not None:
            await self.telemetry.shutdown()  # (the spans still queued are exported)
        flush_all(access_log)  # (a forked worker exits without logging.shutdown)


def _translator(
    provider: Provider,
    echoed: dict[str, Any],
    model: str,
    store: bool,
    secrets: _core.Secrets,
    sealed: bool,
    cipher: ReasoningCipher,
    tenant: str,
    framing: Framing,
    **more: Any,
) -> Translator:
    """A response's translator for `provider`'s dialect. What a client sees of reasoning items' `encrypted_content`
    is the writer's (`reasoning=`): sealed by the router when asked for; an upstream's own (Anthropic's signatures,
    OpenAI's blobs) stays in the stored response for later turns but is shown only when asked. `more`: the response
    id, `created_at` and `started` of a failover's next attempt."""
    if sealed:
        return provider.translator(
            echoed,
            model=model,
            store=store,
            secrets=secrets,
            reasoning="seal",
            seal=lambda payload: cipher.seal_payload(tenant, payload, provider.name),
            framing=framing,
            **more,
        )
    if provider.keeps_encrypted_reasoning:
        return provider.translator(
            echoed, model=model, store=store, secrets=secrets, reasoning="strip", framing=framing, **more
        )
    return provider.translator(echoed, model=model, store=store, secrets=secrets, framing=framing, **more)


def limiter_for(keys: KeyTable, store: StoreConfig) -> Limiter | None:
    """Where limited keys' counts live: Redis when the store is (every instance on it), else a file the workers of
    this instance share (`FERROUTE_LIMITS_FILE`, made by `ferroute serve`; without it, this process's memory)."""
    if not keys.limited:
        return None
    if store.backend == "redis" and store.url:
        return RedisLimits(store.url, store.key_prefix)
    return LocalLimits(keys.limited, os.environ.get(FILE_ENV) or None)


def secrets_of(settings: Settings, providers: dict[str, Provider]) -> list[str]:
    """Every secret the router holds: its upstream keys, its clients' keys, the reasoning encryption key."""
    secrets = list(settings.server.api_keys)
    secrets += [secret for key in settings.keys if (secret := key.secret())]
    secrets += [key for provider in providers.values() if (key := provider.config.api_key())]
    encryption = os.environ.get((settings.store or StoreConfig()).encryption_key_env)
    if encryption:
        secrets.append(encryption)
    return secrets


def build_app(settings: Settings | None = None) -> App:
    """The app with its parts made from `settings` (the embedded defaults when None)."""
    settings = settings or load_settings(None)
    store_config = settings.store or StoreConfig()
    cipher, generated = ReasoningCipher.from_env(store_config.encryption_key_env)
    if generated:
        error_log.warning(
            "$%s is not set: reasoning.encrypted_content uses a key made up by this process; blobs will not "
            "open after a restart or on another instance (set the variable on every instance)",
            store_config.encryption_key_env,
        )
    return App(settings, providers=build_providers(settings), store=open_store(store_config), cipher=cipher)


def create_app() -> App:
    """Granian's factory target: settings from `FERROUTE_CONFIG` (set by `ferroute serve`)."""
    return build_app(load_settings(os.environ.get("FERROUTE_CONFIG") or None))

"""OpenTelemetry traces (README "Tracing"): a span per response, a child per upstream attempt and per hosted tool call,
after the GenAI semantic conventions, exported over OTLP/HTTP (protobuf) by the SDK's batch processor.

Off unless `[telemetry] otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; off, nothing of OpenTelemetry is imported and a request pays one `is
None` test per hook. On, each worker makes its own tracer provider at startup (after Granian's fork: the batch
processor's thread belongs to the worker), exports from that thread (never from the request path), and flushes at
shutdown.

The spans:
- the response (`POST /v1/responses`, a WebSocket `response.create`, a sub-agent's nested response): named
  `chat {model}` (the model the client sent), kind SERVER (INTERNAL for a nested response), the child of an incoming
  W3C `traceparent` (or of the tool call that runs a nested response); `gen_ai.*` request, response and usage
  attributes, `error.type` when it failed;
- each upstream attempt, its child: `chat {upstream model}`, kind CLIENT, `server.address`/`server.port`,
  `ferroute.target`, `ferroute.retry`, `ferroute.outcome`, `ferroute.time_to_first_event`; the upstream request
  carries this span's `traceparent`;
- each hosted tool call (an MCP tool, a sub-agent): `execute_tool {tool}`, kind INTERNAL.
No prompt, completion, tool argument or result text unless `capture_content = true` (then masked and cut to
`max_content_chars`); every error message is masked.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ferroute.errors import RouterError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from opentelemetry.context import Context
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.trace import Span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from ferroute import _core
    from ferroute.app.exchange import Exchange
    from ferroute.config import TelemetryConfig
    from ferroute.models import ResponsesRequest
    from ferroute.providers import Provider

error_log = logging.getLogger("ferroute.error")

# The standard variables that turn tracing on (the exporter reads them itself when the config names no endpoint).
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
OPERATION = "chat"  # the conventions' value for a chat-style inference (the Responses API's too)
# `gen_ai.provider.name` by dialect: the wire format's owner (the conventions' "telemetry flavor" discriminator);
# the configured provider name is `ferroute.provider`.
_PROVIDER_NAMES = {"chat_completions": "openai", "responses": "openai", "anthropic": "anthropic", "mock": "ferroute"}
# A response's status as the conventions' finish reason.
_FINISH = {"completed": "stop", "incomplete": "length", "failed": "error", "cancelled": "cancelled"}
_SHUTDOWN_TIMEOUT_MS = 5000
# The batch processor's sizes where `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` / `OTEL_BSP_MAX_QUEUE_SIZE` are not set: 4x
# the SDK's 512 / 2048. Each export costs the request path about the same CPU whatever its size (the export
# thread's turns with the GIL, and the event loop's slowdown around them), so fewer, larger exports cost less per
# span: +67 µs per in-process request with these against +125 µs with the SDK's (README "Tracing"). A batch of
# 2048 router spans is about 0.8 MB, well inside an OTLP/HTTP receiver's usual limits (the Collector's 20 MiB).
_BATCH_SIZE = 2048
_QUEUE_SIZE = 8192
_Tracer = Any  # (`_tracer`'s tracer: the SDK tracer's `start_span`)
Respond = TypeVar("Respond", bound=Callable[..., Awaitable[int]])


def enabled(config: TelemetryConfig) -> bool:
    """Whether tracing is on: an endpoint in the config or the environment (and `OTEL_SDK_DISABLED` not true)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(config.otlp_endpoint) or any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


class Telemetry:
    """A worker's tracing: its tracer (made by `start`) and what every span shares."""

    def __init__(self, config: TelemetryConfig, secrets: _core.Secrets) -> None:
        self.config = config
        self.secrets = secrets
        self.capture = config.capture_content
        self.limit = config.max_content_chars
        self.provider: TracerProvider | None = None
        self.tracer: _Tracer | None = None
        self._servers: dict[str, dict[str, Any]] = {}  # provider name -> its attributes (`upstream`)

    # --- the worker's life ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """The tracer provider, its batch processor (a thread) and exporter: once per worker, at its startup."""
        if self.provider is not None:
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from ferroute._core import __version__

        config = self.config
        name = config.service_name or os.environ.get("OTEL_SERVICE_NAME") or "ferroute"
        # (Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the service name given here wins.)
        resource = Resource.create({"service.name": name, "service.version": __version__})
        endpoint = config.otlp_endpoint
        exporter_class = _exporter_class(OTLPSpanExporter)
        exporter = exporter_class(endpoint=endpoint.rstrip("/") + "/v1/traces") if endpoint else exporter_class()
        provider = TracerProvider(resource=resource)
        queue_size, batch_size = _batch_sizes()
        processor = BatchSpanProcessor(exporter, max_queue_size=queue_size, max_export_batch_size=batch_size)
        provider.add_span_processor(processor)
        self.provider = provider
        self.tracer = _tracer(provider, processor, __version__)

    async def shutdown(self) -> None:
        """Export what is queued (the batch processor's flush) and stop its thread, off the event loop."""
        provider, self.provider, self.tracer = self.provider, None, None
        if provider is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(provider.force_flush, _SHUTDOWN_TIMEOUT_MS)
                await asyncio.to_thread(provider.shutdown)

    # --- responses -----------------------------------------------------------------------------------------------

    def traced(self, respond: Respond) -> Respond:
        """`App.respond` with a span around it (the app swaps it in when tracing is on: no cost when off)."""

        async def traced_respond(*args: Any, trace_parent: Any = None, **kwargs: Any) -> int:
            tracer = self.tracer
            if tracer is None:  # (not started: an app used without its lifespan)
                return int(await respond(*args, **kwargs))
            request: ResponsesRequest = args[0]
            log: dict[str, Any] = args[5]
            trace = ResponseTrace(self, tracer, request, trace_parent, kwargs.get("depth", 0))
            on_exchange = kwargs.get("on_exchange")

            def made(ex: Exchange) -> None:
                ex.trace = trace
                trace.ex = ex
                if on_exchange is not None:
                    on_exchange(ex)

            kwargs["on_exchange"] = made
            log["trace_id"] = trace.trace_id
            try:
                status = int(await respond(*args, **kwargs))
            except BaseException as e:
                if not trace.detached:
                    trace.end(None, e)
                raise
            if not trace.detached:  # (a background response's span ends with its job: `detach`)
                trace.end(status, None)
            return status

        return cast("Respond", traced_respond)

    def upstream(self, provider: Provider) -> dict[str, Any]:
        """A provider's attributes, worked out once: `gen_ai.provider.name` (its dialect's owner),
        `ferroute.provider`, and the upstream's `server.address`/`server.port` (none for the built-in mock)."""
        attributes = self._servers.get(provider.name)
        if attributes is None:
            kind = provider.config.kind
            attributes = {"gen_ai.provider.name": _PROVIDER_NAMES.get(kind, kind), "ferroute.provider": provider.name}
            url = getattr(provider.source, "url", None)
            if url is not None:
                attributes["server.address"] = url.host
                attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
            self._servers[provider.name] = attributes
        return attributes

    def mask(self, text: str) -> str:
        """Masked (the router's secrets) and cut to the content limit."""
        if len(text) > self.limit:
            text = text[: self.limit] + "…"
        return self.secrets.mask(text)

    def content(self, value: Any) -> str:
        """`value` as JSON, masked and cut (captured content only)."""
        return self.mask(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


class ResponseTrace:
    """One response's span, and the attempt under way."""

    __slots__ = ("attempt", "detached", "ex", "headers", "recording", "span", "telemetry", "trace_id", "tracer")

    span: Span

    def __init__(
        self, telemetry: Telemetry, tracer: _Tracer, request: ResponsesRequest, parent: Any, depth: int
    ) -> None:
        self.telemetry = telemetry
        self.tracer = tracer
        self.ex: Exchange | None = None
        self.attempt: Attempt | None = None
        self.detached = False  # ended by a background job, not when the request is answered
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.request.model": request.model,
        }
        if request.max_output_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_output_tokens
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if request.top_p is not None:
            attributes["gen_ai.request.top_p"] = request.top_p
        if request.previous_response_id is not None:
            attributes["ferroute.previous_response_id"] = request.previous_response_id
        self.span = span = tracer.response(f"{OPERATION} {request.model}", parent, depth == 0, attributes)
        # Not sampled (`OTEL_TRACES_SAMPLER`, or a parent's flags): the span records nothing, and nothing more is
        # worked out for it or its attempts (their `traceparent` still goes upstream, saying "not sampled").
        self.recording = recording = span.is_recording()
        if recording and telemetry.capture:
            span.set_attributes(_input_content(telemetry, request))
        # (The context's items by index, without its properties' calls: trace id, flags, state.)
        context = span.get_span_context()
        # What its attempts' `traceparent` (`Attempt.headers`) shares: the trace, its flags, its `tracestate`.
        prefix = b"00-%032x-" % context[0]
        self.trace_id = prefix[3:35].decode()
        state = context[4]
        self.headers = (prefix, b"-%02x" % context[3], state.to_header().encode() if state else None)

    def start_attempt(
        self, ex: Exchange, target: str, retry: int, provider: Provider, upstream_model: str, beside: bool
    ) -> Attempt:
        attempt = Attempt(self, ex, target, retry, provider, upstream_model)
        if not beside:
            if self.attempt is not None:
                self.attempt.end()
            self.attempt = attempt
        return attempt

    def detach(self) -> Callable[[asyncio.Task[Any]], None]:
        """The response goes on in a background job after its request is answered (`app.background`): its span ends
        with the job (what the response became, its attempts, its usage), by the callback returned (the job's done
        callback), not when the request's answer is sent."""
        self.detached = True

        def job_done(job: asyncio.Task[Any]) -> None:
            error = asyncio.CancelledError() if job.cancelled() else job.exception()
            self.end(None if error is not None else 200, error)

        return job_done

    def tool(self, name: str, call_id: str | None, server: str | None, arguments: str) -> ToolSpan:
        return ToolSpan(self, name, call_id, server, arguments)

    def end(self, status: int | None, exc: BaseException | None) -> None:
        """End the span: what the response became (the exchange's translator) or the error it was answered with."""
        span = self.span
        telemetry = self.telemetry
        ex = self.ex
        # The exchange refers to this trace (`ex.trace`): dropping the way back frees both by reference counting
        # when the response is done, not at the collector's next pass (the exchange holds its buffers till then).
        self.ex = None
        if not self.recording:
            if self.attempt is not None:
                self.attempt.end()
            span.end()
            return
        attributes: dict[str, Any] = {}
        error: str | None = None
        message: str | None = None
        if ex is not None:
            provider = ex.provider
            translator = ex.translator
            attributes.update(telemetry.upstream(provider))
            attributes["gen_ai.response.id"] = translator.response_id
            attributes["gen_ai.response.model"] = ex.upstream_model  # (the model asked of the upstream that answered)
            translator_status = translator.status
            attributes["ferroute.response.status"] = translator_status
            if translator_status in _FINISH:
                attributes["gen_ai.response.finish_reasons"] = (_FINISH[translator_status],)
            usage = translator.usage
            if usage is not None:
                input_tokens, output_tokens, cached, reasoning = usage
                attributes["gen_ai.usage.input_tokens"] = input_tokens
                attributes["gen_ai.usage.output_tokens"] = output_tokens
                if cached:
                    attributes["gen_ai.usage.cache_read.input_tokens"] = cached
                if reasoning:
                    attributes["gen_ai.usage.reasoning.output_tokens"] = reasoning
            if translator_status == "failed":
                error = ex.log.get("error_code") or "failed"
            if telemetry.capture and translator_status != "in_progress":
                attributes.update(_output_content(telemetry, translator.response_json()))
            if self.attempt is not None:
                self.attempt.end()
        if exc is not None:
            error, message = _error_of(exc)
            if isinstance(exc, RouterError):  # (answered with its status)
                status = exc.status
        if status is not None:
            attributes["http.response.status_code"] = status
        if error is not None:
            attributes["error.type"] = error
            span.set_status(self.tracer.ERROR, telemetry.mask(message) if message else None)
        span.set_attributes(attributes)
        span.end()


class Attempt:
    """One upstream attempt: its span (a child of the response's) and the `traceparent` the upstream request carries.
    Ended by `end` (a failure before the first byte: the error), else when the next attempt starts or the response
    ends (its outcome then read from the exchange)."""

    __slots__ = ("began", "ex", "first_event_at", "headers", "span", "trace")

    def __init__(
        self, trace: ResponseTrace, ex: Exchange, target: str, retry: int, provider: Provider, upstream_model: str
    ) -> None:
        self.trace = trace
        self.ex: Exchange | None = ex
        self.began = time.monotonic()
        self.first_event_at: float | None = None
        attributes: dict[str, Any] | None = None
        if trace.recording:  # (a response not sampled has attempts not sampled: their attributes would be dropped)
            attributes = {
                "gen_ai.operation.name": OPERATION,
                "gen_ai.request.model": upstream_model,
                "ferroute.target": target,
                "ferroute.retry": retry,
                **trace.telemetry.upstream(provider),
            }
        self.span: Span | None = trace.tracer.child(trace.span, f"{OPERATION} {upstream_model}", True, attributes)
        prefix, flags, state = trace.headers  # (a child: the response's trace, flags and state)
        span_id = self.span.get_span_context()[1]  # (`span_id`: the tuple's item, without the property's call)
        self.headers: list[tuple[bytes, bytes]] = [(b"traceparent", prefix + b"%016x" % span_id + flags)]
        if state is not None:
            self.headers.append((b"tracestate", state))

    def first_event(self) -> None:
        """The upstream's first content event reached the client now (otherwise the exchange's first send is used)."""
        if self.first_event_at is None:
            self.first_event_at = time.monotonic()

    def end(self, error: BaseException | None = None) -> None:
        """End the attempt: with `error` (it failed before streaming), else as its exchange went."""
        span, self.span = self.span, None
        if span is None:
            return
        if self.trace.attempt is self:
            self.trace.attempt = None
        ex = self.ex
        self.ex = None  # (no cycle left with the exchange: `ResponseTrace.end`)
        if not self.trace.recording or ex is None:
            span.end()
            return
        attributes: dict[str, Any] = {}
        first = self.first_event_at
        if first is None and ex.first_event_at is not None and ex.first_event_at >= self.began:
            first = ex.first_event_at
        if first is not None:
            attributes["ferroute.time_to_first_event"] = round(first - self.began, 6)
        message = None
        if error is not None:
            outcome, message = _error_of(error)
        elif ex.stop == "client_gone" and not ex.delivered:
            outcome = "client_disconnected"
        elif ex.timeout is not None:
            outcome = f"{ex.timeout}_timeout"
        elif ex.translator.status == "failed":
            outcome = ex.log.get("error_code") or "failed"
        else:
            outcome = "ok"
        attributes["ferroute.outcome"] = outcome
        if outcome != "ok":
            attributes["error.type"] = outcome
            span.set_status(self.trace.tracer.ERROR, self.trace.telemetry.mask(message) if message else None)
        span.set_attributes(attributes)
        span.end()


class ToolSpan:
    """A hosted tool call's span (an MCP tool or a sub-agent), a child of the response's."""

    __slots__ = ("span", "telemetry", "tracer")

    def __init__(
        self, trace: ResponseTrace, name: str, call_id: str | None, server: str | None, arguments: str
    ) -> None:
        self.telemetry = telemetry = trace.telemetry
        self.tracer = trace.tracer
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "extension",  # (run by the router, not by the client)
        }
        if call_id is not None:
            attributes["gen_ai.tool.call.id"] = call_id
        if server is not None:
            attributes["ferroute.mcp.server"] = server
        if telemetry.capture:
            attributes["gen_ai.tool.call.arguments"] = telemetry.mask(arguments)
        self.span: Span | None = trace.tracer.child(trace.span, f"execute_tool {name}", False, attributes)

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """This span as the current context (a sub-agent's nested response, run inside, is its child)."""
        from opentelemetry import context
        from opentelemetry.trace import set_span_in_context

        assert self.span is not None
        token = context.attach(set_span_in_context(self.span))
        try:
            yield
        finally:
            context.detach(token)

    def end(self, *, result: str | None = None, error: str | None = None, message: str | None = None) -> None:
        span, self.span = self.span, None
        if span is None:  # (ended already)
            return
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(self.tracer.ERROR, self.telemetry.mask(message) if message else None)
        elif result is not None and self.telemetry.capture:
            span.set_attribute("gen_ai.tool.call.result", self.telemetry.mask(result))
        span.end()


def _batch_sizes() -> tuple[int | None, int | None]:
    """`BatchSpanProcessor`'s queue and batch sizes where the environment does not set them (`_QUEUE_SIZE`,
    `_BATCH_SIZE`, kept consistent with a size it does set); None: the SDK reads (and checks) the variable."""
    batch = os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "").strip()
    queue = os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "").strip()
    queue_size = batch_size = None
    if not queue:
        queue_size = max(_QUEUE_SIZE, int(batch)) if batch.isdigit() else _QUEUE_SIZE
    if not batch:
        batch_size = min(_BATCH_SIZE, int(queue)) if queue.isdigit() and int(queue) else _BATCH_SIZE
    return queue_size, batch_size


def _queue_of(processor: SpanProcessor) -> tuple[Callable[[Any], None], collections.deque[Any] | None, int]:
    """How a finished span reaches `processor`: its `on_end`; and for the SDK's `BatchSpanProcessor` its queue and
    the length below which a span is appended to it directly (what its `on_end` does then, without checking the
    sampled flag, the process id — a system call — and the shutdown flag per span: the router's spans are sampled,
    and its tracer is made after the fork and stops with the processor). At a full batch, its `on_end` (the export
    thread's wake-up). (None, 0) where the processor is not laid out so."""
    batcher = getattr(processor, "_batch_processor", None)
    queue = getattr(batcher, "_queue", None)
    batch = getattr(batcher, "_max_export_batch_size", None)
    if not isinstance(queue, collections.deque) or not isinstance(batch, int) or batch < 2:
        return processor.on_end, None, 0
    return processor.on_end, queue, batch - 1


def _tracer(provider: TracerProvider, processor: SpanProcessor, version: str) -> _Tracer:
    """The router's tracer: spans made as the SDK's tracer makes them (the provider's sampler, resource and id
    scheme; the batch processor gets each span at its end, read as a `ReadableSpan`) without what the router does
    not use and the SDK's span pays for on the request path: attribute validation and limits, the span's lock, the
    processors' `on_start`, events and links, a `ReadableSpan` copy at the end, and the contexts the propagator and
    the default sampler would build for a response's parent. The router's attribute values are strings, numbers,
    booleans and tuples of strings, as the SDK would have kept them."""
    import random

    from opentelemetry import trace as api
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.sampling import Decision
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        Status,
        StatusCode,
        TraceFlags,
        TraceState,
        set_span_in_context,
    )
    from opentelemetry.trace.span import DEFAULT_TRACE_STATE as default_state

    span_scope = InstrumentationScope("ferroute", version)
    span_resource = provider.resource
    sampler = provider.sampler
    on_end, queue, below = _queue_of(processor)
    append = queue.appendleft if queue is not None else on_end
    getrandbits = random.getrandbits
    sampled_flags, unsampled_flags = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)
    unset = Status(StatusCode.UNSET)
    no_state = TraceState()
    client_kind, internal_kind = api.SpanKind.CLIENT, api.SpanKind.INTERNAL

    class Span(api.Span):
        """A span being recorded (a span not sampled is the SDK's `NonRecordingSpan`) and, once ended, the finished
        span the batch processor queues and the exporter encodes: it reads as the SDK's `ReadableSpan` does, for
        `_core.encode_spans` and for the SDK's own encoder alike, without being copied into one."""

        __slots__ = ("attributes", "context", "end_time", "kind", "name", "parent", "start_time", "status")
        resource = span_resource
        instrumentation_scope = span_scope
        events: tuple[Any, ...] = ()
        links: tuple[Any, ...] = ()
        dropped_attributes = dropped_events = dropped_links = 0

        def __init__(
            self,
            name: str,
            context: SpanContext,
            parent: SpanContext | None,
            kind: api.SpanKind,
            attributes: dict[str, Any],
        ) -> None:
            self.name = name
            self.context = context
            self.parent = parent
            self.kind = kind
            self.attributes = attributes  # (the router sets no None value: the exporter would drop it)
            self.status = unset
            self.start_time = time.time_ns()
            self.end_time: int | None = None

        def get_span_context(self) -> SpanContext:
            return self.context

        def is_recording(self) -> bool:
            return self.end_time is None

        def set_attributes(self, attributes: Mapping[str, Any]) -> None:
            if self.end_time is None:
                self.attributes.update(attributes)

        def set_attribute(self, key: str, value: Any) -> None:
            if self.end_time is None:
                self.attributes[key] = value

        def set_status(self, status: Any, description: str | None = None) -> None:
            if self.end_time is None:
                self.status = status if isinstance(status, Status) else Status(status, description)

        def update_name(self, name: str) -> None:
            self.name = name

        def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
            pass  # (the router records none)

        def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
            pass

        def end(self, end_time: int | None = None) -> None:
            if self.end_time is None:  # (ended: nothing more is recorded)
                self.end_time = end_time or time.time_ns()
                if queue is not None and len(queue) < below:  # (`_queue_of`, in place)
                    append(self)
                else:
                    on_end(self)

    root_bound, follows_parent = _root_bound(sampler.get_description())
    flags_of = {b"01": sampled_flags, b"00": unsampled_flags}

    # A `SpanContext` of ids the router made or checked (valid by construction) without its constructor's checks:
    # the tuple it would build (the ids, `is_remote`, flags, state, and `is_valid`), made by a C call (no Python
    # frame), where that layout holds (it is checked here once; otherwise the constructor).
    def checked(items: tuple[int, int, bool, TraceFlags, TraceState, bool]) -> SpanContext:
        return SpanContext(*items[:5])

    new_context: Callable[[tuple[int, int, bool, TraceFlags, TraceState, bool]], SpanContext] = checked
    probe = SpanContext(3, 4, True, sampled_flags, no_state)
    built = tuple.__new__(SpanContext, (3, 4, True, sampled_flags, no_state, True))
    if built == probe and built.is_valid and built.trace_flags is sampled_flags and built.trace_state is no_state:
        new_context = functools.partial(tuple.__new__, SpanContext)

    def remote_parent(value: bytes) -> SpanContext | None:
        """A W3C `traceparent` of version 00 written exactly so (`00-<32 hex>-<16 hex>-<2 hex>`), as the remote
        parent's `SpanContext` the SDK's propagator reads from it; None for anything else (the propagator's rules
        then apply: spaces, later versions, a value that is not valid)."""
        if len(value) != 55 or value[:3] != b"00-" or value[35] != 45 or value[52] != 45:
            return None
        if value.translate(None, b"0123456789abcdef") != b"---":
            return None
        trace_id, span_id = int(value[3:35], 16), int(value[36:52], 16)
        if not trace_id or not span_id:
            return None
        flags = flags_of.get(value[53:]) or TraceFlags(int(value[53:], 16))
        return new_context((trace_id, span_id, True, flags, default_state, True))

    class Tracer:
        ERROR = StatusCode.ERROR

        def start_span(
            self,
            name: str,
            context: Context | None = None,
            kind: api.SpanKind = api.SpanKind.INTERNAL,
            attributes: dict[str, Any] | None = None,
        ) -> api.Span:
            """A span in `context` (None: the current one), as the SDK's tracer's `start_span`."""
            parent_span = api.get_current_span(context)
            if type(parent_span) is Span:
                return self.child(parent_span, name, kind is api.SpanKind.CLIENT, attributes)
            parent: SpanContext | None = parent_span.get_span_context()
            if parent is not None and not parent.is_valid:
                parent = None
            return self._start(name, parent, context, kind, dict(attributes) if attributes else {})

        def response(self, name: str, headers: Any, server: bool, attributes: dict[str, Any]) -> api.Span:
            """A response's span (`attributes` are taken, not copied): the child of the W3C trace context in an
            ASGI header list, or (`headers` None: a nested response) of the current context."""
            if headers is None:
                return self.start_span(name, None, api.SpanKind.INTERNAL, attributes)
            traceparent = state = None
            for key, value in headers:
                if key == b"traceparent":
                    traceparent = value
                elif key == b"tracestate":
                    state = value
            kind = api.SpanKind.SERVER if server else api.SpanKind.INTERNAL
            if traceparent is None:
                return self._start(name, None, None, kind, attributes)
            parent = remote_parent(traceparent) if state is None else None
            if parent is None:  # (a trace state, another version, spaces, or not valid: the SDK's propagator)
                carrier = {"traceparent": traceparent.decode("latin-1")}
                if state is not None:
                    carrier["tracestate"] = state.decode("latin-1")
                parent = api.get_current_span(_propagator().extract(carrier, Context())).get_span_context()
                if not parent.is_valid:
                    return self._start(name, None, None, kind, attributes)
            return self._start(name, parent, None, kind, attributes)

        def child(self, parent: api.Span, name: str, client: bool, attributes: dict[str, Any] | None) -> api.Span:
            """A child of one of this tracer's spans (`attributes` are taken, not copied): it follows the parent's
            sampling decision (as each of the SDK's samplers would: they are parent-based, or decide by the trace id
            the child shares). One not sampled keeps no attributes."""
            # (The context's items by index: the tuple's, without its properties' calls.)
            context = parent.context if type(parent) is Span else parent.get_span_context()
            span_context = new_context((context[0], getrandbits(64) or 1, False, context[3], context[4], True))
            if type(parent) is not Span:
                return NonRecordingSpan(span_context)
            kind = client_kind if client else internal_kind
            return Span(name, span_context, context, kind, attributes if attributes is not None else {})

        def _start(
            self,
            name: str,
            parent: SpanContext | None,
            context: Context | None,
            kind: api.SpanKind,
            attributes: dict[str, Any],
        ) -> api.Span:
            """A span whose parent is remote (`parent`) or none: the sampler's decision."""
            trace_id = parent.trace_id if parent is not None else getrandbits(128) or 1
            if root_bound is not None:
                if parent is None:
                    sampled, state = trace_id & _TRACE_ID_LIMIT < root_bound, no_state
                elif follows_parent:
                    sampled, state = parent.trace_flags.sampled, parent.trace_state
                else:  # (a sampler that is not parent-based decides by the trace id, the parent's)
                    sampled, state = trace_id & _TRACE_ID_LIMIT < root_bound, parent.trace_state
            else:
                if context is None:
                    context = Context() if parent is None else set_span_in_context(NonRecordingSpan(parent), Context())
                result = sampler.should_sample(context, trace_id, name, kind, attributes)
                sampled = result.decision is Decision.RECORD_AND_SAMPLE
                state = result.trace_state or (parent.trace_state if parent is not None else no_state)
                if sampled and result.attributes:
                    attributes.update(result.attributes)
            span_context = new_context(
                (trace_id, getrandbits(64) or 1, False, sampled_flags if sampled else unsampled_flags, state, True)
            )
            if not sampled:
                return NonRecordingSpan(span_context)
            return Span(name, span_context, parent, kind, attributes)

    return Tracer()


# `_root_bound`: the delegates of the SDK's `ParentBased` sampler when only its root is chosen (the default, and
# `OTEL_TRACES_SAMPLER=parentbased_*`), and the low 64 bits of a trace id its `TraceIdRatioBased` root compares.
_PARENT_BASED = "ParentBased{root:"
_DEFAULT_DELEGATES = (
    ",remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,"
    "localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"
)
_TRACE_ID_LIMIT = (1 << 64) - 1


def _root_bound(description: str) -> tuple[int | None, bool]:
    """For a sampler the router decides in place, without building the contexts the SDK's samplers read — always
    on, always off or a trace id ratio, by itself (`OTEL_TRACES_SAMPLER=always_off`, …: it decides every span, a
    continued one by its trace id) or as the root of a parent-based one with the default delegates (a remote
    parent's flag decides), as the sampler's description says — the bound below which a trace id (its low 64 bits)
    is sampled, as the SDK's `TraceIdRatioBased` computes it, and whether a remote parent's flag decides instead.
    (None, False): any other sampler, which is asked."""
    follows_parent = description.startswith(_PARENT_BASED)
    if follows_parent:
        if not description.endswith(_DEFAULT_DELEGATES):
            return None, False
        description = description[len(_PARENT_BASED) : -len(_DEFAULT_DELEGATES)]
    if description == "AlwaysOnSampler":
        return _TRACE_ID_LIMIT + 1, follows_parent
    if description == "AlwaysOffSampler":
        return 0, follows_parent
    if description.startswith("TraceIdRatioBased{") and description.endswith("}"):
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

        try:
            rate = float(description[len("TraceIdRatioBased{") : -1])
            return int(TraceIdRatioBased.get_bound_for_rate(rate)), follows_parent
        except ValueError:
            return None, False
    return None, False


def _exporter_class(base: type[OTLPSpanExporter]) -> type[OTLPSpanExporter]:
    """The SDK's OTLP/HTTP protobuf exporter, its batches encoded in Rust (`_core.encode_spans`: the same message as
    the SDK's encoder, which builds a protobuf object per span, attribute and value and was half of tracing's CPU
    cost). Its HTTP client, retries and compression are the SDK's own; where those internals are not there (another
    SDK version) or a value cannot be encoded, the SDK's export runs as it is."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    from ferroute._core import encode_spans

    class Exporter(base):  # type: ignore[valid-type,misc]
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            client = getattr(self, "_client", None)
            if client is None or getattr(self, "_shutdown", True):
                return cast("SpanExportResult", super().export(spans))
            try:
                data = encode_spans(spans)
            except Exception:
                return cast("SpanExportResult", super().export(spans))
            result = client.export(data)
            return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE

    return Exporter


def start_attempt(
    ex: Exchange,
    retry: int = 0,
    target: str | None = None,
    *,
    provider: Provider | None = None,
    upstream_model: str | None = None,
    beside: bool = False,
) -> Attempt | None:
    """An upstream attempt's span, before its `provider.open` (pass `attempt.headers` to it); None when tracing is
    off. `target`: "<upstream model>:<provider>" (the exchange's by default); `retry`: 0 for the first try;
    `provider`, `upstream_model`: where it goes (the exchange's by default); `beside`: a hedge, under way beside the
    exchange's attempt (it does not end that one, and is ended by its caller or made the trace's attempt)."""
    trace = ex.trace
    if trace is None:
        return None
    provider = provider or ex.provider
    upstream_model = upstream_model or ex.upstream_model
    return trace.start_attempt(
        ex, target or f"{upstream_model}:{provider.name}", retry, provider, upstream_model, beside
    )


@functools.cache
def _propagator() -> TraceContextTextMapPropagator:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def _error_of(exc: BaseException) -> tuple[str, str | None]:
    """`error.type` (and a message) for how a response or an attempt failed."""
    from ferroute.app.http import ClientGone

    if isinstance(exc, RouterError):
        return exc.code or str(exc.status), exc.message
    if isinstance(exc, ClientGone):
        return "client_disconnected", None
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled", None
    return type(exc).__qualname__, None


# --- captured content (`capture_content = true`): the conventions' message shapes -------------------------------------


def _input_content(telemetry: Telemetry, request: ResponsesRequest) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if request.instructions:
        attributes["gen_ai.system_instructions"] = telemetry.content(
            [{"type": "text", "content": request.instructions}]
        )
    if isinstance(request.input, str):
        messages: list[Any] = [{"role": "user", "parts": [{"type": "text", "content": request.input}]}]
    else:
        items = [item.model_dump(mode="json", exclude_none=True) for item in request.items()]
        messages = [_message(item) for item in items]
    attributes["gen_ai.input.messages"] = telemetry.content(messages)
    return attributes


def _output_content(telemetry: Telemetry, response: bytes) -> dict[str, Any]:
    try:
        output = json.loads(response).get("output") or []
    except ValueError:
        return {}
    return {"gen_ai.output.messages": telemetry.content([_message(item) for item in output])}


def _message(item: dict[str, Any]) -> dict[str, Any]:
    """An Open Responses item as the conventions' message: `{role, parts: [{type, …}]}`."""
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "content": content}]
        else:
            parts = [{"type": "text", "content": part.get("text", "")} for part in content or [] if "text" in part]
        return {"role": item.get("role", "user"), "parts": parts}
    if kind == "function_call":
        call = {"type": "tool_call", "id": item.get("call_id"), "name": item.get("name")}
        return {"role": "assistant", "parts": [{**call, "arguments": item.get("arguments")}]}
    if kind == "function_call_output":
        return {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": item.get("call_id"), "result": item.get("output")}],
        }
    if kind == "reasoning":
        text = " ".join(part.get("text", "") for part in (item.get("summary") or []) + (item.get("content") or []))
        return {"role": "assistant", "parts": [{"type": "reasoning", "content": text}]}
    return {"role": "assistant", "parts": [{"type": kind}]}

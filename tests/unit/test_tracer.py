"""The router's own tracer (`ferroute.telemetry._tracer`) against the OpenTelemetry SDK: a response's span continues
the parent the SDK's W3C propagator reads from the same headers, is sampled as the provider's sampler decides, and
a finished span is what the SDK's encoder and `_core.encode_spans` both read as a `ReadableSpan`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ferroute._core import encode_spans
from ferroute.telemetry import _tracer

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


class _Odd(Sampler):
    """A sampler of its own (the router cannot decide for it: it is asked): odd trace ids."""

    def should_sample(self, parent_context: Any, trace_id: int, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE if trace_id % 2 else Decision.DROP)

    def get_description(self) -> str:
        return "Odd"


def _make(sampler: Sampler | None = None) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return _tracer(provider, processor, "0.1.0"), exporter


HEADERS = [
    f"00-{TRACE}-{SPAN}-01",  # the usual
    f"00-{TRACE}-{SPAN}-00",  # not sampled
    f"00-{TRACE.upper()}-{SPAN}-01",  # upper case: not valid
    f"ff-{TRACE}-{SPAN}-01",  # version ff: not valid
    f"01-{TRACE}-{SPAN}-01-later",  # a later version may carry more
    f"00-{TRACE}-{SPAN}-01-more",  # version 00 may not
    f"00-{'0' * 32}-{SPAN}-01",  # zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # zero span id
    f"  00-{TRACE}-{SPAN}-01\t",  # spaces around
    f"00-{TRACE[:-1]}g-{SPAN}-01",  # not hex
    f"00-{TRACE}-{SPAN[:-1]}-01",  # too short
    f"00-{TRACE[:5]}-{TRACE[6:]}-{SPAN}-01",  # a dash inside the trace id
    "",
]


@pytest.mark.parametrize("traceparent", HEADERS)
@pytest.mark.parametrize("tracestate", [None, "vendor=v1,x=y"])
def test_a_response_continues_the_parent_the_sdks_propagator_reads(traceparent: str, tracestate: str | None) -> None:
    tracer, exporter = _make()
    headers = [(b"content-type", b"application/json"), (b"traceparent", traceparent.encode())]
    carrier = {"traceparent": traceparent}
    if tracestate is not None:
        headers.append((b"tracestate", tracestate.encode()))
        carrier["tracestate"] = tracestate
    expected = get_current_span(TraceContextTextMapPropagator().extract(carrier, Context())).get_span_context()

    span = tracer.response("chat m", headers, True, {"gen_ai.request.model": "m"})
    context = span.get_span_context()
    if expected.is_valid:
        if span.is_recording():
            assert span.parent == expected  # (trace and span ids, flags, state, remote)
        assert context.trace_id == expected.trace_id and context.span_id != expected.span_id
        assert context.trace_flags == expected.trace_flags  # (the default sampler follows a remote parent)
        assert context.trace_state == expected.trace_state
        assert span.is_recording() == expected.trace_flags.sampled
    else:
        assert context.trace_id != int(TRACE, 16)  # a new trace, sampled as a root
        assert span.is_recording() and span.parent is None
    span.end()
    assert len(exporter.get_finished_spans()) == (1 if span.get_span_context().trace_flags.sampled else 0)


def test_no_traceparent_starts_a_sampled_root() -> None:
    tracer, _ = _make()
    span = tracer.response("chat m", [(b"host", b"x")], True, {})
    assert span.is_recording() and span.parent is None and span.get_span_context().is_valid


def test_another_sampler_is_asked_and_children_follow_the_response() -> None:
    tracer, exporter = _make(ALWAYS_OFF)
    response = tracer.response("chat m", [], True, {})
    assert not response.is_recording()
    attempt = tracer.child(response, "chat up", True, {"ferroute.retry": 0})
    assert not attempt.is_recording()
    assert attempt.get_span_context().trace_id == response.get_span_context().trace_id
    attempt.end()
    response.end()
    assert exporter.get_finished_spans() == ()

    # A ratio of 0 samples no root; a parent-based one still follows a caller that samples.
    tracer, _ = _make(ParentBased(TraceIdRatioBased(0.0)))
    assert not tracer.response("chat m", [], True, {}).is_recording()
    continued = tracer.response("chat m", [(b"traceparent", f"00-{TRACE}-{SPAN}-01".encode())], True, {})
    assert continued.is_recording() and continued.get_span_context().trace_id == int(TRACE, 16)


def test_a_finished_span_reads_as_a_readable_span_for_both_encoders() -> None:
    tracer, exporter = _make()
    headers = [(b"traceparent", f"00-{TRACE}-{SPAN}-01".encode()), (b"tracestate", b"vendor=v1")]
    response = tracer.response("chat m", headers, True, {"gen_ai.request.model": "m", "ferroute.tags": ("a", "b")})
    attempt = tracer.child(response, "chat up", True, {"ferroute.retry": 1, "ferroute.time_to_first_event": 0.25})
    attempt.set_status(tracer.ERROR, "upstream said no")
    attempt.end()
    response.set_attributes({"http.response.status_code": 200})
    response.end()
    response.set_attribute("late", True)  # (after its end: not recorded)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["chat up", "chat m"]
    assert "late" not in spans[1].attributes
    assert encode_spans(spans) == sdk_encode_spans(spans).SerializePartialToString()
    assert spans[0].parent == response.get_span_context() and spans[0].kind.name == "CLIENT"


@pytest.mark.parametrize(
    "sampler",
    [
        ParentBased(TraceIdRatioBased(0.3)),
        ParentBased(TraceIdRatioBased(0.0)),
        ParentBased(TraceIdRatioBased(1.0)),
        ParentBased(ALWAYS_OFF),
        TraceIdRatioBased(0.3),  # (not parent-based: by the trace id, a continued trace's too)
        ALWAYS_OFF,
        ALWAYS_ON,
        ParentBased(TraceIdRatioBased(0.3), remote_parent_not_sampled=TraceIdRatioBased(0.5)),  # (asked)
        _Odd(),  # (asked)
    ],
    ids=repr,
)
def test_each_decision_is_the_samplers(sampler: Sampler) -> None:
    tracer, _ = _make(sampler)
    for i in range(300):
        flags = ("01", "00", None)[i % 3]
        headers = [] if flags is None else [(b"traceparent", f"00-{i + 1:032x}-{SPAN}-{flags}".encode())]
        span = tracer.response("chat m", headers, True, {})
        context = span.get_span_context()
        parent = Context()
        if flags is not None:
            parent = TraceContextTextMapPropagator().extract({"traceparent": headers[0][1].decode()}, Context())
        expected = sampler.should_sample(parent, context.trace_id, "chat m").decision.is_sampled()
        assert span.is_recording() == expected == context.trace_flags.sampled, (i, flags)


@pytest.mark.parametrize("sampler", [None, ALWAYS_ON, TraceIdRatioBased(1.0)], ids=repr)
def test_a_continued_trace_keeps_its_state(sampler: Sampler | None) -> None:
    tracer, _ = _make(sampler)
    headers = [(b"traceparent", f"00-{TRACE}-{SPAN}-00".encode()), (b"tracestate", b"vendor=v1,x=y")]
    context = tracer.response("chat m", headers, True, {}).get_span_context()
    assert context.trace_id == int(TRACE, 16) and context.trace_state.to_header() == "vendor=v1,x=y"
    assert context.trace_flags.sampled == (sampler is not None)  # (the default follows the caller: not sampled)


# --- the batch processor: its sizes, and the queue a finished span goes to -------------------------------------------


@pytest.mark.parametrize(
    ("batch", "queue", "sizes"),
    [
        (None, None, (8192, 2048)),  # the router's defaults (4x the SDK's)
        ("512", None, (8192, None)),  # a batch size set: the SDK reads it
        ("10000", None, (10000, None)),  # (a queue at least as large as the batch it was given)
        (None, "1000", (None, 1000)),  # a queue size set: the batch no larger
        (None, "4096", (None, 2048)),
        ("512", "2048", (None, None)),  # both set: the SDK's to read (and check)
    ],
)
def test_the_batch_sizes_where_the_environment_sets_none(
    monkeypatch: pytest.MonkeyPatch, batch: str | None, queue: str | None, sizes: tuple[int | None, int | None]
) -> None:
    from ferroute.telemetry import _batch_sizes

    for name, value in (("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", batch), ("OTEL_BSP_MAX_QUEUE_SIZE", queue)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert _batch_sizes() == sizes


def test_a_started_tracer_batches_2048_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferroute import _core
    from ferroute.config import TelemetryConfig
    from ferroute.telemetry import Telemetry

    monkeypatch.delenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", raising=False)
    monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
    telemetry = Telemetry(TelemetryConfig(otlp_endpoint="http://127.0.0.1:9"), _core.Secrets([]))
    telemetry.start()
    try:
        assert telemetry.provider is not None
        (processor,) = telemetry.provider._active_span_processor._span_processors
        batcher: Any = processor._batch_processor  # type: ignore[attr-defined]
        assert (batcher._max_export_batch_size, batcher._max_queue_size) == (2048, 8192)
    finally:
        asyncio.run(telemetry.shutdown())  # (the router's own: the provider flushed and stopped)


def test_finished_spans_go_to_the_batch_processors_queue_and_a_full_batch_is_exported() -> None:
    """Below a batch, a span is appended to the SDK processor's queue (its `on_end` skipped); the span that fills a
    batch goes through `on_end`, which wakes the export thread. Every span is exported once, in order."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor = BatchSpanProcessor(exporter, max_queue_size=16, max_export_batch_size=4, schedule_delay_millis=60_000)
    provider.add_span_processor(processor)
    calls: list[Any] = []
    on_end = processor.on_end

    def counted(span: Any) -> None:
        calls.append(span)
        on_end(span)

    processor.on_end = counted  # type: ignore[method-assign]
    tracer = _tracer(provider, processor, "0.1.0")  # (made after: it takes `on_end` when made)
    names = [f"s{i}" for i in range(6)]
    for name in names[:4]:
        tracer.response(name, [], True, {}).end()
    assert [s.name for s in calls] == ["s3"]  # (the fourth: a full batch)
    deadline = time.monotonic() + 10
    while len(exporter.get_finished_spans()) < 4 and time.monotonic() < deadline:  # (the export thread's)
        time.sleep(0.01)
    assert [s.name for s in exporter.get_finished_spans()] == names[:4]
    for name in names[4:]:
        tracer.response(name, [], True, {}).end()
    assert [s.name for s in calls] == ["s3"]
    processor.force_flush()
    assert [s.name for s in exporter.get_finished_spans()] == names
    provider.shutdown()


def test_another_processor_gets_each_span_by_its_on_end() -> None:
    tracer, exporter = _make()
    tracer.response("one", [], True, {}).end()
    assert [s.name for s in exporter.get_finished_spans()] == ["one"]

"""`_core.encode_spans` against the OpenTelemetry SDK's own OTLP encoder: the same spans must give the same
`ExportTraceServiceRequest` (parsed back with the `opentelemetry-proto` package), whatever the spans hold."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from ferroute._core import encode_spans


def _spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "ferroute", "n": 3}, schema_url="https://x/1"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("ferroute", "0.1.0", schema_url="https://x/2", attributes={"scope.attr": True})
    other = provider.get_tracer("other")
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("x", "y")]),
    )
    attributes = {
        "text": "héllo ✓",
        "empty": "",
        "flag": False,
        "count": 0,
        "negative": -5,
        "big": 2**62,
        "ratio": 0.25,
        "names": ["a", "b"],
        "numbers": (1, 2, 3),
        "flags": [True, False],
    }
    with tracer.start_as_current_span(
        "chat m", context=set_span_in_context(NonRecordingSpan(remote)), kind=SpanKind.SERVER, attributes=attributes
    ) as parent:
        parent.add_event("started", {"at": 1})
        parent.add_event("plain")
        with tracer.start_as_current_span("attempt", kind=SpanKind.CLIENT, links=[Link(remote, {"why": "hedge"})]):
            pass
        child = other.start_span("tool", kind=SpanKind.INTERNAL)
        child.set_status(StatusCode.ERROR, "it failed: ✗")
        child.end()
        parent.set_status(StatusCode.OK)
    root = tracer.start_span("root", kind=SpanKind.PRODUCER)
    root.end()
    consumer = other.start_span("consumer", kind=SpanKind.CONSUMER)
    consumer.end()
    spans = list(exporter.get_finished_spans())
    provider.shutdown()
    return spans


def test_the_same_message_as_the_sdks_encoder() -> None:
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    theirs = sdk_encode_spans(spans)
    assert ours == theirs, (ours, theirs)
    assert encode_spans(spans) == theirs.SerializePartialToString()  # (fields in the same order: the same bytes)
    # (Not vacuous: two scopes under one resource, the parent's remote flags, events, links, statuses.)
    assert len(ours.resource_spans) == 1 and len(ours.resource_spans[0].scope_spans) == 2
    names = [span.name for scope in ours.resource_spans[0].scope_spans for span in scope.spans]
    assert sorted(names) == ["attempt", "chat m", "consumer", "root", "tool"]


@pytest.mark.parametrize("count", [0, 1, 600])
def test_batches_of_any_size(count: int) -> None:
    spans = (_spans() * 120)[:count]
    assert ExportTraceServiceRequest.FromString(encode_spans(spans)) == sdk_encode_spans(spans)


def test_statuses_and_states_of_their_own_in_every_span() -> None:
    """Past the statuses and trace states a batch remembers (the shared ones), each span's own is still its own."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("ferroute")
    for n in range(40):
        remote = SpanContext(
            trace_id=n + 1, span_id=n + 1, is_remote=n % 2 == 0, trace_flags=TraceFlags(1),
            trace_state=TraceState([("vendor", f"v{n}")]),
        )  # fmt: skip
        span = tracer.start_span(f"s{n}", context=set_span_in_context(NonRecordingSpan(remote)))
        span.set_status(StatusCode.ERROR, f"failure {n}")
        span.end()
    spans = list(exporter.get_finished_spans())
    provider.shutdown()
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert ours == sdk_encode_spans(spans)
    messages = [span.status.message for span in ours.resource_spans[0].scope_spans[0].spans]
    assert messages == [f"failure {n}" for n in range(40)]


class _Reordered(tuple):  # type: ignore[type-arg]
    """A span context whose tuple is not laid out as the SDK's `SpanContext` (its properties say where each is)."""

    trace_id = property(lambda self: self[5])
    span_id = property(lambda self: self[4])
    is_remote = property(lambda self: self[3])
    trace_flags = property(lambda self: self[2])
    trace_state = property(lambda self: self[1])
    is_valid = property(lambda self: self[0])


def test_a_span_context_of_another_layout_is_read_by_its_properties() -> None:
    state = TraceState([("k", "v")])
    context = _Reordered((True, state, TraceFlags(1), False, 0xB7AD6B7169203331, 0x0AF7651916CD43DD8448EB211C80319C))
    parent = _Reordered((True, state, TraceFlags(1), True, 0x1122334455667788, 0x0AF7651916CD43DD8448EB211C80319C))
    span = ReadableSpan("odd", context=context, parent=parent, resource=Resource.create({}))  # type: ignore[arg-type]
    batch = [*_spans(), span, span]  # (the SDK's contexts first: each type's layout is checked on its own)
    ours = ExportTraceServiceRequest.FromString(encode_spans(batch))
    assert ours == sdk_encode_spans(batch)
    written = ours.resource_spans[1].scope_spans[0].spans[1]
    assert written.span_id == bytes.fromhex("b7ad6b7169203331") and written.trace_state == "k=v"
    assert written.parent_span_id == bytes.fromhex("1122334455667788")


def test_a_value_it_cannot_encode_is_a_type_error() -> None:
    span = _spans()[0]
    span._attributes = {"odd": object()}  # type: ignore[assignment]  # (past the SDK's own attribute checks)
    with pytest.raises(TypeError, match="cannot be encoded"):
        encode_spans([span])


def test_the_routers_exporter_sends_these_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http import trace_exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from ferroute.telemetry import _exporter_class
    from tests.support.otlp import otlp_receiver

    spans = _spans()
    with otlp_receiver() as receiver:
        exporter = _exporter_class(OTLPSpanExporter)(endpoint=f"{receiver.url}/v1/traces")

        def refuse(spans: object) -> None:
            raise AssertionError("the SDK's encoder ran")

        monkeypatch.setattr(trace_exporter, "encode_spans", refuse)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        assert receiver.raw == [encode_spans(spans)]
        # A value the Rust encoder refuses goes through the SDK's export (which skips that attribute).
        monkeypatch.undo()
        odd = _spans()[0]
        odd._attributes = {"odd": object(), "fine": 1}  # type: ignore[assignment]
        exporter = _exporter_class(OTLPSpanExporter)(endpoint=f"{receiver.url}/v1/traces")
        assert exporter.export([odd]) is SpanExportResult.SUCCESS
        assert receiver.spans[-1].attributes == {"fine": 1}
        exporter.shutdown()

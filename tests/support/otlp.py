"""A local OTLP/HTTP trace receiver for the tracing tests: `POST /v1/traces` with a protobuf
`ExportTraceServiceRequest`, decoded with `opentelemetry-proto` into plain `Span` records."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Span:
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind (1 INTERNAL, 2 SERVER, 3 CLIENT)
    trace_id: str  # hex
    span_id: str
    parent_id: str  # "" for a root
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)
    start_ns: int = 0  # unix nanoseconds
    end_ns: int = 0


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def decode(body: bytes) -> list[Span]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        spans += [
            Span(
                name=span.name,
                kind=span.kind,
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_id=span.parent_span_id.hex(),
                attributes={a.key: _value(a.value) for a in span.attributes},
                status_code=span.status.code,
                status_message=span.status.message,
                resource=resource,
                start_ns=span.start_time_unix_nano,
                end_ns=span.end_time_unix_nano,
            )
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
    return spans


class Receiver:
    """What the receiver got: `spans` (decoded), `posts` (how many requests), `raw` (their bodies)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.spans: list[Span] = []
        self.raw: list[bytes] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> list[Span]:
        """The spans once `predicate(spans)` holds (polled), or an AssertionError with what came."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"spans not received in time: {[(s.name, s.attributes) for s in spans]}")
            time.sleep(0.05)


@contextlib.contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """The receiver on a free loopback port, in a thread of the test process; `url` is its base URL."""
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            receiver = holder[0]
            spans = decode(body) if self.path == "/v1/traces" else []
            with receiver.lock:
                receiver.paths.append(self.path)
                receiver.raw.append(body)
                receiver.spans += spans
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()

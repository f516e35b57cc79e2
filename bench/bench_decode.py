"""Decode an Open Responses SSE stream into Python dicts: ferroute vs the pure-Python ways.

    make develop && .venv/bin/pytest bench/bench_decode.py --benchmark-enable --benchmark-only

Implementations, each from the stream's bytes to the list of event dicts:
- `ferroute-parser`: `ferroute.ResponseEventParser` (also checks the grammar and accumulates the response);
- `ferroute-sse+orjson`: `ferroute.SSEDecoder` + `orjson.loads` of each event's data;
- `httpx-sse+json`: httpx-sse's decoder over an `httpx.Response` streaming the reads + `json.loads`;
- `split+orjson`: split on blank lines, take the `data: ` lines, `orjson.loads`.
Fed as one read (`whole`) and as 4 KiB reads. Each case asserts its result, so under the default
`--benchmark-disable` it runs once as a test."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import httpx_sse
import orjson
import pytest

import ferroute
from bench.chat_stream import reads
from bench.streams import open_responses_stream

N = 10_000
STREAM = open_responses_stream(N, done=True)
EVENTS = STREAM.count(b"\ndata: {")


def run_parser(chunks: list[bytes]) -> list[dict[str, Any]]:
    parser = ferroute.ResponseEventParser()
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    parser.close()
    assert parser.response is not None
    return events


def run_sse_orjson(chunks: list[bytes]) -> list[dict[str, Any]]:
    decoder = ferroute.SSEDecoder()
    loads = orjson.loads
    events = []
    for chunk in chunks:
        events += [loads(event.data) for event in decoder.feed(chunk) if event.data != "[DONE]"]
    return events


def run_httpx_sse(chunks: list[bytes]) -> list[dict[str, Any]]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))
    loads = json.loads
    return [loads(sse.data) for sse in httpx_sse.EventSource(response).iter_sse() if sse.data != "[DONE]"]


def run_split_orjson(chunks: list[bytes]) -> list[dict[str, Any]]:
    loads = orjson.loads
    events = []
    buffer = b""
    for chunk in chunks:
        *frames, buffer = (buffer + chunk).split(b"\n\n")
        events += [
            loads(line[6:])
            for frame in frames
            for line in frame.split(b"\n")
            if line.startswith(b"data: ") and line != b"data: [DONE]"
        ]
    return events


IMPLEMENTATIONS: dict[str, Callable[[list[bytes]], list[dict[str, Any]]]] = {
    "ferroute-parser": run_parser,
    "ferroute-sse+orjson": run_sse_orjson,
    "httpx-sse+json": run_httpx_sse,
    "split+orjson": run_split_orjson,
}


@pytest.mark.parametrize("read_size", [None, 4096], ids=["whole", "4KiB"])
@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_decode(benchmark: Any, implementation: str, read_size: int | None) -> None:
    if implementation == "ferroute-sse+orjson" and not hasattr(ferroute, "SSEDecoder"):
        pytest.skip("ferroute.SSEDecoder is not built yet")
    chunks = reads(STREAM, read_size)
    benchmark.group = f"decode {EVENTS} events, {'whole' if read_size is None else '4KiB reads'}"
    benchmark.extra_info["events"] = EVENTS
    benchmark.extra_info["bytes"] = len(STREAM)
    events = benchmark(IMPLEMENTATIONS[implementation], chunks)
    assert len(events) == EVENTS
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["sequence_number"] == EVENTS - 1
    assert events[-1]["response"]["output"][1]["content"][0]["text"].startswith(" The capital")

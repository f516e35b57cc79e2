"""SSE decoding only (events with their data strings, no JSON): ferroute vs the pure-Python ways.

    make develop && .venv/bin/pytest bench/bench_sse.py --benchmark-enable --benchmark-only

The stream is a Chat Completions stream of 10,000 content chunks (~300-byte events) plus the finish,
usage and `[DONE]` events (`bench/chat_stream.py`), fed as one read (`whole`) or as 4 KiB reads.
Implementations, each from the reads to the list of events:
- `ferroute`: `ferroute.SSEDecoder().feed(read)` → `SSEEvent`s;
- `httpx-sse`: the way httpx-sse is used, `httpx_sse.EventSource(response).iter_sse()` over an
  `httpx.Response` whose stream yields the reads (includes httpx's own text decoding of the body);
- `httpx-sse-decoder`: httpx-sse's internal decoders only (`SSELineDecoder` + `SSEDecoder`) behind an
  incremental UTF-8 decoder: the same decoding work without the `httpx.Response` around it, the fairest
  like-for-like comparison;
- `split`: a plain split on blank lines keeping the `data: ` lines (not a conforming decoder: no CR
  line ends, no multi-line data, no event names; the floor for pure Python).
Each case asserts its result, so under the default `--benchmark-disable` it runs once as a test."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import httpx_sse
import pytest
from httpx_sse._decoders import SSEDecoder as HttpxSSEDecoder
from httpx_sse._decoders import SSELineDecoder

import ferroute
from bench.chat_stream import openai_text_stream, reads

N = 10_000
STREAM = openai_text_stream(N)
EVENTS = STREAM.count(b"\n\n")


def run_ferroute(chunks: Sequence[bytes]) -> list[Any]:
    decoder = ferroute.SSEDecoder()
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.close()
    return events


def run_httpx_sse(chunks: Sequence[bytes]) -> list[Any]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))
    return list(httpx_sse.EventSource(response).iter_sse())


def run_httpx_sse_decoder(chunks: Sequence[bytes]) -> list[Any]:
    text_decoder = codecs.getincrementaldecoder("utf-8")("replace")
    line_decoder = SSELineDecoder()
    decoder = HttpxSSEDecoder()
    events = []
    for chunk in chunks:
        for line in line_decoder.decode(text_decoder.decode(chunk)):
            event = decoder.decode(line)
            if event is not None:
                events.append(event)
    for line in line_decoder.flush():
        event = decoder.decode(line)
        if event is not None:
            events.append(event)
    return events


def run_split(chunks: Sequence[bytes]) -> list[str]:
    events = []
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *blocks, buffer = buffer.split(b"\n\n")
        events += [line[6:].decode() for block in blocks for line in block.split(b"\n") if line.startswith(b"data: ")]
    return events


IMPLEMENTATIONS: dict[str, Callable[[Sequence[bytes]], list[Any]]] = {
    "ferroute": run_ferroute,
    "httpx-sse": run_httpx_sse,
    "httpx-sse-decoder": run_httpx_sse_decoder,
    "split": run_split,
}
FEEDINGS = {"whole": None, "4KiB": 4096}


def data_of(event: Any) -> str:
    return event if isinstance(event, str) else str(event.data)


@pytest.mark.parametrize("feeding", FEEDINGS)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_sse_decode(benchmark: Any, implementation: str, feeding: str) -> None:
    benchmark.group = f"sse-decode-{feeding}"
    benchmark.extra_info.update(events=EVENTS, bytes=len(STREAM))
    chunks = reads(STREAM, FEEDINGS[feeding])
    events = benchmark(IMPLEMENTATIONS[implementation], chunks)
    assert len(events) == EVENTS
    assert data_of(events[-1]) == "[DONE]"
    assert data_of(events[0]).startswith('{"id":"chatcmpl-')
    assert data_of(events[N // 2]) == data_of(run_split([STREAM])[N // 2])

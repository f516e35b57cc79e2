"""A fast mock Chat Completions upstream for the router overhead bench (stdlib asyncio only).

`tests/mock_upstream.py` replays fixtures one `await drain()` per event, which is right for the tests
and too slow to feed hundreds of streams; this one serves pre-built byte strings from a raw
`asyncio.Protocol`, so its own CPU stays small next to the router's.

`POST …/chat/completions` streams a generated text answer; the upstream model name says how:
`bench?n=<events>&gap=<seconds>`.

- `n`: content chunks (default 200), then a `finish_reason` chunk, a usage chunk and `data: [DONE]`.
- `gap=0` (default, "burst"): the whole answer goes out in one `transport.write`, framed as a real
  server frames it (one HTTP chunk per SSE event, as uvicorn/vLLM do) — the upstream sends as fast as
  the socket takes it.
- `gap>0` ("paced"): the head and first event at once, then one event per write every `gap` seconds.
  One shared ticker writes the next event of every paced stream (cheaper than a timer per stream),
  so the streams that started in the same tick stay in step.

Anything else is a 404. HTTP/1.1 keep-alive; `Connection: close` is honoured.
Run: `python -m bench.fast_upstream [--port N]`; it prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import re
import sys

WORDS = [" The", " capital", " of", " the", " UK", " is", " London", ",", " a", " city", " of", " \u00e9t\u00e9", " 🚀"]
_CHUNK = (
    '{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1782955818,"model":"bench",'
    '"system_fingerprint":"fp_bench","choices":[{{"index":0,"delta":{{"content":{word}}},"logprobs":null,'
    '"finish_reason":null}}]}}'
)
_MODEL = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def text(n: int) -> str:
    """The answer's text: what the router's `response.completed` must hold."""
    return "".join(WORDS[i % len(WORDS)] for i in range(n))


@functools.lru_cache(maxsize=64)
def sse_events(n: int) -> tuple[bytes, ...]:
    """The SSE events of an `n`-chunk answer, each `data: …\\n\\n`, ending with `data: [DONE]`."""
    events = [
        b"data: " + _CHUNK.format(word=json.dumps(WORDS[i % len(WORDS)], ensure_ascii=False)).encode() + b"\n\n"
        for i in range(n)
    ]
    stop = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1782955818, "model": "bench",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}  # fmt: skip
    usage = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1782955818, "model": "bench",
             "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": n + 12}}  # fmt: skip
    events.extend(b"data: " + json.dumps(p, separators=(",", ":")).encode() + b"\n\n" for p in (stop, usage))
    events.append(b"data: [DONE]\n\n")
    return tuple(events)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@functools.lru_cache(maxsize=64)
def chunked_events(n: int) -> tuple[bytes, ...]:
    """`sse_events(n)`, each framed as one HTTP/1.1 chunk."""
    return tuple(_chunk(e) for e in sse_events(n))


@functools.lru_cache(maxsize=64)
def burst_answer(n: int) -> bytes:
    """The whole HTTP answer (head, one chunk per event, last chunk) as one byte string."""
    return _HEAD + b"".join(chunked_events(n)) + b"0\r\n\r\n"


def parse_model(model: bytes) -> tuple[int, float]:
    _, _, query = model.partition(b"?")
    n, gap = 200, 0.0
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"n":
            n = int(value)
        elif key == b"gap":
            gap = float(value)
    return n, gap


class _Paced:
    """The paced streams in flight, advanced one event each per tick."""

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.streams: dict[_Server, list[object]] = {}  # server → [events, next index]
        self.task: asyncio.Task[None] | None = None

    def add(self, server: _Server, events: tuple[bytes, ...]) -> None:
        self.streams[server] = [events, 1]
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while self.streams:
            next_tick += self.gap
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            ended, finished = [], []
            for server, state in self.streams.items():
                events, i = state
                assert isinstance(events, tuple) and isinstance(i, int)
                transport = server.transport
                if transport is None or transport.is_closing():
                    ended.append(server)
                elif i == len(events):
                    transport.write(b"0\r\n\r\n")
                    finished.append(server)
                else:
                    transport.write(events[i])
                    state[1] = i + 1
            for server in ended + finished:
                del self.streams[server]
            for server in finished:  # may start the connection's next (queued) answer
                server.answer_done()


class _Server(asyncio.Protocol):
    def __init__(self, paced: dict[float, _Paced]) -> None:
        self.paced = paced
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False  # an answer is going out (requests queue in `buffer` meanwhile)
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._serve()

    def answer_done(self) -> None:
        self.busy = False
        if self.close_after and self.transport is not None:
            self.transport.close()
            return
        self._serve()

    def _serve(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    self.close_after = True
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            if method != "POST" or not path.endswith("/chat/completions"):
                msg = b'{"error":{"message":"not found"}}'
                self.transport.write(
                    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(msg), msg)
                )
                continue
            match = _MODEL.search(body)
            n, gap = parse_model(match.group(1) if match else b"")
            if gap <= 0:
                self.transport.write(burst_answer(n))
                if self.close_after:
                    self.transport.close()
                continue
            events = chunked_events(n)
            self.busy = True
            self.transport.write(_HEAD + events[0])
            ticker = self.paced.get(gap)
            if ticker is None:
                ticker = self.paced[gap] = _Paced(gap)
            ticker.add(self, events)


async def serve(host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    paced: dict[float, _Paced] = {}
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Server(paced), host, port, backlog=1024)


async def _main(port: int) -> None:
    server = await serve(port=port)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()

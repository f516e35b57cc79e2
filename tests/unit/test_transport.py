"""ferroute._transport: the upstream httpx transport (HTTP/1.1 over asyncio, one body piece per socket read)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from ferroute._core import ChunkedDecoder, ChunkedError
from ferroute._transport import _HIGH_WATER, _READ_MAX, StreamTransport, _Conn, upstream_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _chunked(pieces: list[bytes], trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    return out + b"0\r\n" + trailer + b"\r\n"


def test_chunked_decoder_any_split() -> None:
    pieces = [b"data: %d\n\n" % i * (i % 7 + 1) for i in range(40)]
    wire = _chunked(pieces, trailer=b"x-t: 1\r\n")
    for size in (1, 2, 3, 5, 17, 64, len(wire)):
        d = ChunkedDecoder()
        out = b"".join(d.feed(wire[i : i + size]) for i in range(0, len(wire), size))
        assert out == b"".join(pieces), size
        assert d.done and not d.extra
    d = ChunkedDecoder()
    assert d.feed(wire + b"HTTP/1.1 200") == b"".join(pieces)
    assert d.done and d.extra


def test_chunked_decoder_errors_name_the_offset_and_stick() -> None:
    d = ChunkedDecoder()
    assert d.feed(b"2\r\nok\r\n") == b"ok"
    with pytest.raises(ChunkedError, match="malformed chunk-size line at byte 7"):
        d.feed(b"zz\r\n")
    with pytest.raises(ChunkedError):
        d.feed(b"2\r\nok\r\n")
    with pytest.raises(ChunkedError, match="not followed by CRLF"):
        ChunkedDecoder().feed(b"2\r\nokX")
    with pytest.raises(ChunkedError, match="too long"):
        ChunkedDecoder().feed(b"1" * 5000)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


async def _serve(handler: Handler, body: Callable[[httpx.AsyncClient, str], Awaitable[Any]]) -> Any:
    tasks: set[asyncio.Task[Any]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            await _close(writer)

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = upstream_client()
    try:
        return await body(client, f"http://127.0.0.1:{port}/v1/chat/completions")
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            assert not pending


def test_one_piece_per_read_and_keep_alive() -> None:
    pieces = [b'data: {"n": %d}\n\n' % i for i in range(200)]
    connections: list[int] = []
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                seen.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nset-cookie: a=b\r\n"
            writer.write(head + b"transfer-encoding: chunked\r\n\r\n" + _chunked(pieces))  # one write
            await writer.drain()
        await _close(writer)

    async def body(client: httpx.AsyncClient, url: str) -> list[list[bytes]]:
        reads = []
        for _ in range(3):
            async with client.stream("POST", url, content=b'{"x":1}') as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "text/event-stream"
                reads.append([piece async for piece in response.aiter_raw()])
        assert not client.cookies  # an upstream's cookies are never kept (the client is shared)
        return reads

    reads = asyncio.run(_serve(handler, body))
    for got in reads:
        assert b"".join(got) == b"".join(pieces)
        assert len(got) < 10  # socket reads, not 200 HTTP chunks
    assert len(connections) == 1  # kept alive and reused
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and seen[0].endswith(b'\r\n\r\n{"x":1}')


def test_a_burst_is_handed_up_in_pieces_of_at_most_read_max() -> None:
    """A burst (the upstream had much of its answer ready) reaches the translator, and so the client's send queue,
    in pieces of at most `_READ_MAX` bytes, every byte once and in order; reading resumes once the queue is under
    half the high-water mark."""
    pieces = [b'data: {"n": %d}\n\n' % i * 9 for i in range(40_000)]
    body = b"".join(pieces)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))  # one write
        await writer.drain()

    async def read(client: httpx.AsyncClient, url: str) -> list[bytes]:
        async with client.stream("POST", url, content=b"{}") as response:
            got = []
            async for piece in response.aiter_raw():
                got.append(piece)
                await asyncio.sleep(0)  # (a slow consumer: the queue fills)
            return got

    got = asyncio.run(_serve(handler, read))
    assert b"".join(got) == body and len(body) > 4 * _HIGH_WATER
    assert max(map(len, got)) <= _READ_MAX
    assert sum(len(piece) == _READ_MAX for piece in got) > len(got) // 2  # (not cut smaller than it must be)

    class Transport:
        def __init__(self) -> None:
            self.paused = False

        def pause_reading(self) -> None:
            self.paused = True

        def resume_reading(self) -> None:
            self.paused = False

    async def queue() -> None:
        conn = _Conn(asyncio.get_running_loop())
        transport = Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        for size in (300_000, 10, 700_000, 200_000, 5):  # sockets' reads of various sizes
            conn.data_received(bytes([size % 251]) * size)
        assert transport.paused
        handed = [await conn.read() for _ in range(3)]
        assert [len(h) for h in handed] == [_READ_MAX] * 3 and transport.paused
        while conn.size > _HIGH_WATER // 2:
            handed.append(await conn.read())
        assert not transport.paused
        conn.eof_received()
        while piece := await conn.read():
            handed.append(piece)
        assert max(map(len, handed)) <= _READ_MAX
        assert b"".join(handed) == b"".join(bytes([s % 251]) * s for s in (300_000, 10, 700_000, 200_000, 5))

    asyncio.run(queue())


def test_content_length_close_delimited_and_stale_keepalive() -> None:
    calls: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        calls.append(1)
        if len(calls) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()
            await _close(writer)  # keep-alive promised, but the connection goes away while idle
        elif len(calls) == 2:
            writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"a":')
            await writer.drain()
            writer.write(b"1}")
            await _close(writer)  # the body ends with the connection
        else:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()

    async def body(client: httpx.AsyncClient, url: str) -> list[Any]:
        first = await client.post(url, content=b"{}")
        await asyncio.sleep(0.05)
        second = await client.post(url, content=b"{}")  # the stale connection is dropped, a new one used
        third = await client.post(url, content=b"{}")
        return [first.status_code, first.content, second.json(), third.status_code]

    assert asyncio.run(_serve(handler, body)) == [200, b"hello", {"a": 1}, 204]


def test_errors_are_httpx_errors() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_request(reader)
        if b"/cut" in request:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        elif b"/badframe" in request:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nnot hex\r\n")
        else:
            writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        await _close(writer)

    async def body(client: httpx.AsyncClient, url: str) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(url, content=b"{}")
        async with client.stream("POST", url.replace("completions", "cut"), content=b"{}") as response:
            pieces = response.aiter_raw()
            assert await anext(pieces) == b"hello"
            with pytest.raises(httpx.RemoteProtocolError):
                await anext(pieces)
        async with client.stream("POST", url.replace("completions", "badframe"), content=b"{}") as response:
            with pytest.raises(httpx.RemoteProtocolError, match="malformed chunk-size line at byte 10"):
                await response.aread()

    asyncio.run(_serve(handler, body))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def refused() -> None:
        async with upstream_client() as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(f"http://127.0.0.1:{port}/", content=b"{}")

    asyncio.run(refused())


def test_closing_mid_body_closes_the_socket() -> None:
    closed = asyncio.Event

    async def main() -> bool:
        gone = closed()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            if await reader.read(1) == b"":  # the client hung up
                gone.set()
            await _close(writer)

        async def body(client: httpx.AsyncClient, url: str) -> bool:
            async with client.stream("POST", url, content=b"{}") as response:
                async for _ in response.aiter_raw():
                    break
            await asyncio.wait_for(gone.wait(), 5)
            assert isinstance(client._transport, StreamTransport)
            assert client._transport.idle_count == 0
            return True

        result: bool = await _serve(handler, body)
        return result

    assert asyncio.run(main())


def test_a_provider_on_another_transport_goes_through_httpx_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """The router's own path writes the request head as bytes (`StreamTransport.open`); any other httpx
    transport (and https, which StreamTransport hands to httpx's) gets an `httpx.Request` and answers the same."""
    from ferroute.config import ProviderConfig, TimeoutsConfig
    from ferroute.errors import RouterError
    from ferroute.models import parse_request
    from ferroute.providers.chat_completions import ChatCompletionsDialect
    from ferroute.providers.http import HttpUpstream

    seen: list[httpx.Request] = []
    answers = {
        "stream": httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"data: [DONE]\n\n"),
        "json": httpx.Response(200, json={"id": "chatcmpl-1", "choices": []}),
        "busy": httpx.Response(429, headers={"Retry-After": "7"}, content=b"slow down, key sk-upstream"),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[request.headers["x-case"]]

    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream")
    config = ProviderConfig(
        name="up", kind="chat_completions", base_url="https://example.test/v1", api_key_env="UPSTREAM_KEY"
    )
    provider = HttpUpstream(config, ChatCompletionsDialect(config), TimeoutsConfig())
    request = parse_request(b'{"model":"m:up","input":"hi","stream":true}', max_depth=64, max_input_items=100)

    async def run() -> None:
        transport = httpx.MockTransport(handler)
        for case in answers:
            provider.headers = [*provider.headers[:5], (b"x-case", case.encode())]
            if case == "busy":
                with pytest.raises(RouterError) as raised:
                    await provider.open(request, "m", transport)
                assert raised.value.status == 429
                assert raised.value.headers == [(b"retry-after", b"7")]
                assert b"sk-upstream" not in raised.value.body()
                continue
            upstream = await provider.open(request, "m", transport)
            if case == "json":
                assert upstream.body == b'{"id":"chatcmpl-1","choices":[]}'
            else:
                assert upstream.chunks is not None
                assert b"".join([piece async for piece in upstream.chunks]) == b"data: [DONE]\n\n"
                await upstream.aclose()

    asyncio.run(run())
    assert [r.url for r in seen] == [httpx.URL("https://example.test/v1/chat/completions")] * 3
    assert seen[0].headers["authorization"] == "Bearer sk-upstream"
    assert seen[0].headers["content-length"] == str(len(seen[0].content))

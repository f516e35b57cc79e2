"""An httpx transport for plain-HTTP/1.1 upstreams on asyncio: one body piece per socket read.

httpx's default transport (httpcore + h11) hands a chunked body up one HTTP chunk at a time, and
vLLM/uvicorn write one chunk per SSE event, so a socket read holding 200 events became 200 trips
through httpcore/anyio/httpx, 200 `translator.feed` calls and 200 ASGI `send`s. Here a socket read
is de-chunked in one pass and handed up whole: one read of many events → one `feed` → one `send`. A burst
(more than 64 KB waiting) is handed up 64 KB at a time, so that what queues downstream for a slow client stays
small.
It also keeps its own keep-alive pool (a dict of idle connections per origin), avoiding httpcore's
pool bookkeeping, which is quadratic in the number of open connections.

The API stays httpx: the router hands it `httpx.Request`s and reads `httpx.Response`s (or wrap it in an
`AsyncClient`, as `upstream_client` does); `https://` and anything else this transport does not speak
goes to httpx's own transport. Errors are httpx's
(`ConnectError`, `ConnectTimeout`, `ReadError`, `RemoteProtocolError`). Closing a response before
its body ended closes the socket at once (that is how a client's disconnect cancels the upstream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ferroute._core import ChunkedDecoder, ChunkedError

_MAX_HEAD = 64 * 1024  # response status line + headers
_HIGH_WATER = 1 << 20  # stop reading the socket with this much unconsumed (resume once taken)
_READ_MAX = 64 * 1024  # a read hands up at most this much (more than one socket read's worth, if queued)

Origin = tuple[str, int]


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: received bytes are queued as the socket delivers them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes | memoryview] = []  # (a memoryview: the rest of a read handed up in pieces)
        self.size = 0
        self.paused = False
        self.eof = False
        self.closed = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.used = False  # has carried a request before (a reused keep-alive connection)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's transports are not subclasses)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def read(self) -> bytes:
        """Everything received so far, up to `_READ_MAX` bytes (waiting for at least one byte); b"" at end of
        stream."""
        while not self.chunks:
            if self.eof or self.closed:
                if self.error is not None:
                    raise self.error
                return b""
            self.waiter = self.loop.create_future()
            await self.waiter
        chunks = self.chunks
        if self.size <= _READ_MAX:
            first = chunks[0]
            data = first if len(chunks) == 1 and type(first) is bytes else b"".join(chunks)
            self.chunks = []
            self.size = 0
        else:
            data = self._piece()
        if self.paused and self.size <= _HIGH_WATER // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def _piece(self) -> bytes:
        """`_READ_MAX` bytes off the front of the queue (a burst is handed up in pieces, so that what waits for a
        slow client downstream stays small), each byte copied once."""
        chunks = self.chunks
        first = chunks[0]
        if len(first) > _READ_MAX:  # (slicing a memoryview copies nothing; the piece is copied out once)
            view = first if isinstance(first, memoryview) else memoryview(first)
            data = bytes(view[:_READ_MAX])
            chunks[0] = view[_READ_MAX:]
        else:
            taken, size = 1, len(first)
            while taken < len(chunks) and size + len(chunks[taken]) <= _READ_MAX:
                size += len(chunks[taken])
                taken += 1
            data = b"".join(chunks[:taken])
            del chunks[:taken]
        self.size -= len(data)
        return data

    def unread(self, data: bytes) -> None:
        if data:
            self.chunks.insert(0, data)
            self.size += len(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Body(httpx.AsyncByteStream):
    """A response body: de-framed socket reads; the connection goes back to the pool at its end."""

    def __init__(
        self,
        pool: StreamTransport,
        origin: Origin,
        conn: _Conn,
        request: httpx.Request | None,
        framing: str,
        length: int,
        initial: bytes,
        reusable: bool,
    ) -> None:
        self.pool, self.origin, self.conn, self.request = pool, origin, conn, request
        self.framing = framing  # "chunked", "length", "close" or "none"
        self.length = length
        self.initial = initial
        self.reusable = reusable
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        framing = self.framing
        if framing == "none":
            self._release(True)
            return
        data = self.initial
        self.initial = b""
        dechunker = ChunkedDecoder() if framing == "chunked" else None
        left = self.length
        while True:
            if not data:
                try:
                    data = await conn.read()
                except OSError as e:
                    self._release(False)
                    raise httpx.ReadError(str(e) or type(e).__name__, request=self.request) from None
                if not data:
                    if framing == "close":
                        self._release(False)
                        return
                    self._release(False)
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body", request=self.request
                    )
            if dechunker is not None:
                try:
                    piece = dechunker.feed(data)
                except ChunkedError as e:
                    self._release(False)
                    raise httpx.RemoteProtocolError(str(e), request=self.request) from None
                if dechunker.done:
                    self._release(not dechunker.extra)
                    if piece:
                        yield piece
                    return
            elif framing == "length":
                if len(data) >= left:
                    piece = data[:left] if len(data) > left else data
                    self._release(len(data) == left)
                    if piece:
                        yield piece
                    return
                piece = data
                left -= len(data)
            else:
                piece = data
            data = b""
            if piece:
                yield piece

    def _release(self, clean: bool) -> None:
        if self.released:
            return
        self.released = True
        if clean and self.reusable:
            self.pool._put(self.origin, self.conn)
        else:
            self.conn.close()

    async def aclose(self) -> None:
        self._release(False)  # a body closed before its end: the socket goes (the upstream sees it at once)


class Answer:
    """A response head (header names lower-cased) and its body: `async for piece in answer.body`, then the
    connection goes back to the pool; `await answer.body.aclose()` before the end closes it."""

    __slots__ = ("body", "headers", "reason", "status", "version")

    def __init__(
        self, status: int, version: bytes, reason: bytes, headers: list[tuple[bytes, bytes]], body: _Body
    ) -> None:
        self.status = status
        self.version = version
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (`name` in lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


class StreamTransport(httpx.AsyncBaseTransport):
    """Plain HTTP/1.1 with keep-alive over asyncio; everything else via `httpx.AsyncHTTPTransport`."""

    def __init__(self, *, max_keepalive: int = 256, keepalive_expiry: float = 60.0) -> None:
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self.idle: dict[Origin, list[_Conn]] = {}
        self.idle_count = 0
        self.fallback = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=max_keepalive,
                                keepalive_expiry=keepalive_expiry),
            trust_env=False,
        )  # fmt: skip

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http" or "transfer-encoding" in request.headers:
            return await self.fallback.handle_async_request(request)
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        # A body given as bytes (what the providers send) is read without `aread`'s async iteration.
        body = request.read() if isinstance(request.stream, httpx.SyncByteStream) else await request.aread()
        answer = await self.open(
            (url.host, url.port or 80), self._head(request), body, timeouts.get("connect"), request.method, request
        )
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=answer.body,
            extensions={"http_version": answer.version, "reason_phrase": answer.reason},
        )

    async def open(
        self,
        origin: Origin,
        head: bytes,
        body: bytes,
        connect_timeout: float | None,
        method: str = "POST",
        request: httpx.Request | None = None,
    ) -> Answer:
        """Send a request whose head (request line and headers, ending with the blank line) is already
        bytes, and read the response head: the router's path, without httpx's request and response objects
        (~30 µs of a request's event-loop time at 1,500 non-streaming requests/s: building and normalizing
        their headers, `aiter_raw`'s layers). Errors are httpx's; `request` only goes into them."""
        while True:
            conn = self._take(origin)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin, request, connect_timeout)
            conn.used = True
            assert conn.transport is not None
            conn.transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.transport.write(body)
            try:
                return await self._response(origin, conn, method, request)
            except BaseException as e:
                conn.close()
                # A reused keep-alive connection the server had closed: try again on another one.
                if reused and getattr(e, "_before_response", False):
                    continue
                raise

    @staticmethod
    def _head(request: httpx.Request) -> bytes:
        lines = [request.method.encode("ascii") + b" " + request.url.raw_path + b" HTTP/1.1"]
        for name, value in request.headers.raw:
            lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _connect(self, origin: Origin, request: httpx.Request | None, timeout: float | None) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(lambda: _Conn(loop), origin[0], origin[1]), timeout)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except OSError as e:
            raise httpx.ConnectError(str(e) or type(e).__name__, request=request) from None
        return conn

    async def _response(self, origin: Origin, conn: _Conn, method: str, request: httpx.Request | None) -> Answer:
        buffer = b""
        while True:
            try:
                data = await conn.read()
            except OSError as e:
                err = httpx.ReadError(str(e) or type(e).__name__, request=request)
                err._before_response = not buffer  # type: ignore[attr-defined]
                raise err from None
            if not data:
                err2 = httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
                err2._before_response = not buffer  # type: ignore[attr-defined]
                conn.close()
                raise err2
            buffer += data
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("response head too large", request=request)
                continue
            lines = buffer[:end].split(b"\r\n")
            rest = buffer[end + 4 :]
            parts = lines[0].split(b" ", 2)
            try:
                version, status = parts[0], int(parts[1])
            except (IndexError, ValueError):
                raise httpx.RemoteProtocolError("malformed status line", request=request) from None
            if not version.startswith(b"HTTP/1."):
                raise httpx.RemoteProtocolError("not an HTTP/1.x response", request=request)
            if 100 <= status < 200:  # an interim response (100 Continue, 103 Early Hints): skip it
                buffer = rest
                if b"\r\n\r\n" in buffer:
                    conn.unread(buffer)
                    buffer = b""
                continue
            reason = parts[2] if len(parts) > 2 else b""
            headers: list[tuple[bytes, bytes]] = []
            chunked, length, keep_alive = False, -1, version == b"HTTP/1.1"
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep:
                    raise httpx.RemoteProtocolError("malformed header line", request=request)
                name = name.strip().lower()
                value = value.strip()
                headers.append((name, value))
                if name == b"transfer-encoding":
                    chunked = value.lower().endswith(b"chunked")
                elif name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        raise httpx.RemoteProtocolError("malformed Content-Length", request=request) from None
                elif name == b"connection":
                    tokens = value.lower()
                    if b"close" in tokens:
                        keep_alive = False
                    elif b"keep-alive" in tokens:
                        keep_alive = True
            if method == "HEAD" or status in (204, 304):
                framing, length = "none", 0
            elif chunked:
                framing = "chunked"
            elif length >= 0:
                framing = "length" if length else "none"
            else:
                framing, keep_alive = "close", False
            return Answer(
                status, version, reason, headers, _Body(self, origin, conn, request, framing, length, rest, keep_alive)
            )

    def _take(self, origin: Origin) -> _Conn | None:
        idle = self.idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self.idle_count -= 1
            if conn.closed or conn.eof or conn.chunks or now - conn.idle_since > self.keepalive_expiry:
                conn.close()
                continue
            return conn
        return None

    def _put(self, origin: Origin, conn: _Conn) -> None:
        if conn.closed or conn.eof or self.idle_count >= self.max_keepalive:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self.idle.setdefault(origin, []).append(conn)
        self.idle_count += 1

    async def aclose(self) -> None:
        for idle in self.idle.values():
            for conn in idle:
                conn.close()
        self.idle.clear()
        self.idle_count = 0
        await self.fallback.aclose()


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: the upstream client is shared by every caller, so a `Set-Cookie`
    from an upstream must not ride along on other callers' requests. (It also skips httpx's per-response
    cookie parsing: ~7% of the router's event-loop time per request at concurrency 1, by py-spy.)"""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def upstream_client(*, max_keepalive: int = 256, keepalive_expiry: float = 60.0) -> httpx.AsyncClient:
    """The router's shared upstream client: `StreamTransport`, no redirects, no environment, no cookies."""
    client = httpx.AsyncClient(
        transport=StreamTransport(max_keepalive=max_keepalive, keepalive_expiry=keepalive_expiry),
        follow_redirects=False,
        trust_env=False,
    )
    client._cookies = _NoCookies()  # (httpx's setter would wrap it in a plain `Cookies`)
    return client

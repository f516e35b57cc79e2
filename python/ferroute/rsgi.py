"""Granian's RSGI interface onto the ASGI app: an option (`[server] interface = "rsgi"`), not the default.

Measured on Granian 2.8.7 (README "Granian tuning"): an RSGI `send_bytes` costs ~0.6 µs of server CPU
where an ASGI `send` of a body costs ~5.8 µs, but with one send per upstream read the whole router
measures the same either way. And RSGI's stream transport queues every send in an unbounded channel:
`send_bytes` never waits, so a client that reads slowly makes the worker hold the rest of its response
in memory (tests/router/test_backpressure.py shows it), where Granian's ASGI `send` waits while the
client is behind. Hence ASGI is the default.

The app itself stays a plain ASGI application (`ferroute.app:create_app` runs under any ASGI server);
this module only maps RSGI's calls onto ASGI messages:

- scope: method, path, query string and headers (as bytes, lower-case names, as ASGI has them);
- receive: the body (one message when the request declared a Content-Length, else as it streams in),
  then `http.disconnect` once the client goes away;
- send: `http.response.start` is held until the first body; a single body is `response_bytes`, a
  streamed one `response_stream` + `send_bytes`, ended by freeing the transport after the last body.
- lifecycle: `__rsgi_init__` / `__rsgi_del__` run the app's startup and shutdown (the graceful drain
  included) on the worker's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ferroute._types import Message
from ferroute.app import App, create_app

_REQUEST_END = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT = {"type": "http.disconnect"}


class RSGIApp:
    """An RSGI application (Granian's `__rsgi__` protocol) serving an `App`."""

    def __init__(self, app: App) -> None:
        self.app = app

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.app.startup(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.app.shutdown())

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":  # websockets are off; nothing else is served
            return
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in scope.headers.items()]
        asgi_scope = {
            "type": "http",
            "http_version": scope.http_version,
            "method": scope.method,
            "scheme": scope.scheme,
            "path": scope.path,
            "query_string": scope.query_string.encode("latin-1"),
            "headers": headers,
        }
        sized = "content-length" in scope.headers
        await self.app.http(asgi_scope, _Receive(protocol, sized), _Send(protocol))


class _Receive:
    __slots__ = ("body", "chunks", "protocol", "sized")

    def __init__(self, protocol: Any, sized: bool) -> None:
        self.protocol = protocol
        self.sized = sized
        self.body = True  # the body has not been read yet
        self.chunks: AsyncIterator[bytes] | None = None

    async def __call__(self) -> dict[str, Any]:
        if self.body:
            if self.sized:  # the app checked the declared size before asking: read it at once
                self.body = False
                return {"type": "http.request", "body": await self.protocol(), "more_body": False}
            if self.chunks is None:
                self.chunks = self.protocol.__aiter__()
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                self.body = False
                return _REQUEST_END
            return {"type": "http.request", "body": chunk, "more_body": True}
        await self.protocol.client_disconnect()
        return _DISCONNECT


class _Send:
    __slots__ = ("headers", "protocol", "status", "transport")

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.transport: Any = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in message["headers"]]
            return
        body: bytes = message.get("body", b"")
        transport = self.transport
        if transport is None:
            if not message.get("more_body", False):
                self.protocol.response_bytes(self.status, self.headers, body)
                return
            transport = self.transport = self.protocol.response_stream(self.status, self.headers)
        if not message.get("more_body", False):
            # Granian ends a streamed response when its transport is freed: drop it now, as ASGI's last
            # body ends the response, not whenever the handler returns or a collection frees it.
            self.transport = None
        if body:
            await transport.send_bytes(body)


def create_rsgi_app() -> RSGIApp:
    """Granian's factory target for `--interface rsgi`."""
    return RSGIApp(create_app())

"""The app's plain ASGI I/O: reading a bounded request body, answering JSON, and the one way a client's going
away is said (`ClientGone`)."""

from __future__ import annotations

from ferroute._types import Message, Receive, Scope, Send
from ferroute.errors import RouterError, invalid_request, request_too_large

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
METRICS_HEADERS = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]


class ClientGone(Exception):
    """The client went away (an ASGI `send` failed, or `http.disconnect` arrived)."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, at most `limit` bytes (a 413 past it, before reading more when Content-Length says so)."""
    declared = -1
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise invalid_request("invalid Content-Length header") from None
            if declared > limit:
                raise request_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise request_too_large(limit)
        chunks.append(chunk)
        # With the declared length read, the body is whole. (Granian sends a body as one message with
        # `more_body` and then an empty last one: waiting for that was a second hop from its Rust thread on the
        # way to the first event. The disconnect watcher takes it instead, beside the upstream's answer.)
        if not message.get("more_body", False) or size == declared:
            return b"".join(chunks)


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS + (headers or [])})
    await send({"type": "http.response.body", "body": body})
    return status


async def send_error(send: Send, error: RouterError) -> int:
    return await send_json(send, error.status, error.body(), error.headers)

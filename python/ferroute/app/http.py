"""The app's plain ASGI I/O: reading a bounded request body, answering JSON, and the one way a client's going
away is said (`ClientGone`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from ferroute._types import Message, Receive, Scope, Send
from ferroute.errors import RouterError, invalid_request, request_timeout, request_too_large

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
METRICS_HEADERS = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]


class ClientGone(Exception):
    """The client went away (an ASGI `send` failed, or `http.disconnect` arrived)."""


async def read_body(scope: Scope, receive: Receive, limit: int, timeout: float) -> bytes:
    """The request body, at most `limit` bytes (a 413 past it, before reading more when Content-Length says so),
    whole within `timeout` seconds (else a 408: Granian bounds the head's arrival, not the body's)."""
    declared = -1
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise invalid_request("invalid Content-Length header") from None
            if declared > limit:
                raise request_too_large(limit)
    deadline = _Deadline(timeout)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message: Message = await deadline.wait(receive())
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
    finally:
        deadline.cancel()


_TASK_CANCEL = asyncio.Task.cancel


def uncancel(task: asyncio.Task[Any]) -> None:
    """Undo a `cancel` the task has handled (Python 3.11+ counts them; `asyncio.timeout` reads the count)."""
    uncancel_ = getattr(task, "uncancel", None)
    if uncancel_ is not None:
        uncancel_()


class _Deadline:
    """One timer for a whole body read (not a `wait_for` per message): when it fires, the `receive()` being
    awaited is cancelled and the read ends with a 408. Granian's `receive()` gives a future, which is cancelled
    itself; a coroutine (the RSGI adapter, other servers) is awaited in the request's task, which is cancelled,
    or in a task of its own where the request's task cannot be (Granian's "rust" task implementation)."""

    __slots__ = ("expired", "handle", "pending", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.pending: asyncio.Future[Any] | None = None
        self.handle = asyncio.get_running_loop().call_later(seconds, self._expire)

    async def wait(self, awaitable: Awaitable[Message]) -> Message:
        if isinstance(awaitable, asyncio.Future):
            self.pending = awaitable
        else:
            task = asyncio.current_task()
            if task is None or type(task).cancel is not _TASK_CANCEL:
                awaitable = self.pending = asyncio.ensure_future(awaitable)
            else:
                self.pending = task
        try:
            return await awaitable
        except asyncio.CancelledError:
            if not self.expired:
                raise
            task = asyncio.current_task()
            if self.pending is task and task is not None:
                uncancel(task)
            raise request_timeout(self.seconds) from None
        finally:
            self.pending = None

    def _expire(self) -> None:
        self.expired = True
        if self.pending is not None:
            self.pending.cancel()

    def cancel(self) -> None:
        self.handle.cancel()


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS + (headers or [])})
    await send({"type": "http.response.body", "body": body})
    return status


async def send_error(send: Send, error: RouterError) -> int:
    return await send_json(send, error.status, error.body(), error.headers)

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


async def read_body(scope: Scope, receive: Receive, limit: int, reading: BodyRead) -> bytes:
    """The request body, at most `limit` bytes (a 413 past it, before reading more when Content-Length says so),
    whole by `reading`'s deadline (else a 408: Granian bounds the head's arrival, not the body's). The caller puts
    `reading` under the worker's clock (`Clock.watch`), which calls its `expire` once the deadline has passed: one
    set entry per request, where a timer each (`call_later`) cost ~4 µs per request, much of it in the event loop's
    heap of cancelled timers (in-process A/B, `bench/app_cost.py`)."""
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
        message: Message = await reading.wait(receive())
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


TASK_CANCEL = asyncio.Task.cancel  # (a task whose `cancel` is this one can be cancelled; Granian's "rust" tasks cannot)


def uncancel(task: asyncio.Task[Any]) -> None:
    """Undo a `cancel` the task has handled (Python 3.11+ counts them; `asyncio.timeout` reads the count)."""
    uncancel_ = getattr(task, "uncancel", None)
    if uncancel_ is not None:
        uncancel_()


class BodyRead:
    """A body being read, with its deadline: when the clock says it has passed (`expire`), the `receive()` being
    awaited is cancelled and the read ends with a 408. Granian's `receive()` gives a future, which is cancelled
    itself; a coroutine (the RSGI adapter, other servers) is awaited in the request's task, which is cancelled,
    or in a task of its own where the request's task cannot be (Granian's "rust" task implementation)."""

    __slots__ = ("deadline", "expired", "pending", "seconds")

    def __init__(self, deadline: float, seconds: float) -> None:
        self.deadline = deadline
        self.seconds = seconds
        self.expired = False
        self.pending: asyncio.Future[Any] | None = None

    async def wait(self, awaitable: Awaitable[Message]) -> Message:
        if self.expired:
            raise request_timeout(self.seconds)
        if isinstance(awaitable, asyncio.Future):
            self.pending = awaitable
        else:
            task = asyncio.current_task()
            if task is None or type(task).cancel is not TASK_CANCEL:
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

    def expire(self) -> None:
        self.expired = True
        if self.pending is not None:
            self.pending.cancel()


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """A JSON answer; `headers`: more than its content type."""
    all_headers = JSON_HEADERS + headers if headers else JSON_HEADERS
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def send_error(send: Send, error: RouterError, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """`error`'s answer; `headers`: more than its own."""
    return await send_json(send, error.status, error.body(), error.headers + headers if headers else error.headers)

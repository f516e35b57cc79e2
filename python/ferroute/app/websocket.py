"""WebSocket mode: `GET /v1/responses` upgraded to a WebSocket (the spec's, as the compliance suite exercises it).

The upgrade is authenticated like an HTTP request (a bad key: the handshake is refused). The client then sends
`{"type": "response.create", …request fields}` messages; each runs through the same pipeline as
`POST /v1/responses` with `stream: true` (`App.respond`, framing MESSAGES): one text message per event, the same
event objects as the SSE stream in one `sequence_number` series per response, no `[DONE]`.

- One response in flight per connection: a `response.create` while one runs is answered with an error message
  (`response_in_progress`), the running one goes on.
- Several responses one after another, each may continue the last by `previous_response_id`: from the store as
  over HTTP, or, for a `store: false` response, from this connection's cache of its last response (its context and
  output, kept until the next response replaces it; a continuation from it that fails evicts it, so that a retry
  cannot build on it silently). An id neither knows is a `previous_response_not_found` error.
- Errors are messages `{"type": "error", "status", "error": {"type", "code", "message", "param"}}` and leave the
  connection usable (an error once a response has started is its own `error` + `response.failed` events, as in
  SSE).
- A client that goes away cancels the running response (its upstream call and tool calls; a stored one is stored
  `cancelled`), as a dropped SSE client does.
- After `[server] websocket_max_lifetime` seconds the connection is closed (code 1000, reason
  `websocket_connection_limit_reached`, after an error message with that code); a response in flight ends first.
- Keep-alives: an ASGI application cannot send WebSocket ping frames (the protocol has no message for them);
  Granian answers the client's pings, which is what keeps an idle connection alive (the `websockets` and
  browsers' clients ping on their own). No keep-alive messages are sent: every message is an event.
- Backpressure: each message's `send` is awaited, as an SSE body's is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic_core

from ferroute._types import Message, Receive, Scope, Send
from ferroute.app.exchange import MESSAGES, Exchange
from ferroute.app.http import ClientGone
from ferroute.errors import (
    RouterError,
    internal_error,
    invalid_request,
    model_not_allowed,
    request_too_large,
    shutting_down,
)
from ferroute.logs import log_line
from ferroute.models import ResponsesRequest, parse_json_object, validate_request
from ferroute.routing.keys import Key
from ferroute.store import Record
from ferroute.store.items import record_items, to_models

if TYPE_CHECKING:
    from ferroute.app.asgi import App

access_log = logging.getLogger("ferroute.access")
error_log = logging.getLogger("ferroute.error")

PATH = "/v1/responses"
LIMIT_REACHED = "websocket_connection_limit_reached"
_NORMAL_CLOSURE = 1000
_POLICY_VIOLATION = 1008  # (the handshake refused: a bad key, another path)
_DISCONNECT: Message = {"type": "http.disconnect"}
_ENDED = ("completed", "incomplete")  # a response that can be continued from the cache


@dataclass(slots=True)
class _Cached:
    """A `store: false` response kept for the next turn: its id and the items a continuation starts from."""

    id: str
    items: list[dict[str, Any]]


def envelope(error: RouterError) -> str:
    """The spec's WebSocket error message."""
    detail = {"type": error.type, "code": error.code, "message": error.message, "param": error.param}
    return json.dumps({"type": "error", "status": error.status, "error": detail}, ensure_ascii=False)


async def serve(app: App, scope: Scope, receive: Receive, send: Send) -> None:
    """One WebSocket connection, from its handshake to its close."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    try:
        if scope["path"] != PATH:
            raise RouterError(404, f"no WebSocket route {scope['path']}", type="not_found", code="not_found")
        key = app._identify(scope)
    except RouterError as e:
        await _refuse(scope, send, e)
        return
    await send({"type": "websocket.accept"})
    await Connection(app, scope, receive, send, key).run()


async def _refuse(scope: Scope, send: Send, error: RouterError) -> None:
    """Refuse the handshake: the error's status and JSON body where the server can answer one (the ASGI
    `websocket.http.response` extension), else a close before the accept (the server answers 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [(b"content-type", b"application/json"), *error.headers]
        await send({"type": "websocket.http.response.start", "status": error.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": error.body()})
        return
    await send({"type": "websocket.close", "code": _POLICY_VIOLATION, "reason": error.code or ""})


class Connection:
    """An accepted connection: its messages read in turn, at most one response running (in a task of its own, so
    that messages, a disconnect above all, are read while it runs)."""

    def __init__(self, app: App, scope: Scope, receive: Receive, send: Send, key: Key) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.send = send
        self.key = key  # the caller's (its model globs and limits apply to each response)
        self.tenant = key.tenant
        self.running: asyncio.Task[None] | None = None
        self.current: Exchange | None = None  # the running response's exchange, once made
        self.answered = False  # the running response's last message (terminal event or error) is being sent
        self.cache: _Cached | None = None
        loop = asyncio.get_running_loop()
        self.gone: asyncio.Future[None] = loop.create_future()  # the client disconnected
        self.expired: asyncio.Future[None] = loop.create_future()  # the connection's lifetime has passed

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.app.settings.server.websocket_max_lifetime, _set, self.expired)
        incoming: asyncio.Future[Message] | None = None
        try:
            while True:
                if incoming is None:
                    incoming = asyncio.ensure_future(self.receive())
                waiting: set[asyncio.Future[Any]] = {incoming}
                if not self.expired.done():
                    waiting.add(self.expired)
                elif self.running is not None:
                    waiting.add(self.running)  # (past its lifetime: the connection closes once it has ended)
                else:
                    # (Granian sends no close frame while a `receive()` is pending: it goes first.)
                    incoming.cancel()
                    incoming = None
                    await asyncio.sleep(0)
                    await self._close_expired()
                    return
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not incoming.done():
                    continue
                message, incoming = incoming.result(), None
                kind = message["type"]
                if kind == "websocket.disconnect":
                    return
                if kind == "websocket.receive":
                    await self._on_message(message)
        except Exception:  # (a failed send or receive: the connection is over)
            return
        finally:
            timer.cancel()
            _set(self.gone)
            if incoming is not None:
                incoming.cancel()
            if self.running is not None:
                with contextlib.suppress(BaseException):
                    await self.running

    async def _close_expired(self) -> None:
        lifetime = self.app.settings.server.websocket_max_lifetime
        error = RouterError(
            400,
            f"the connection reached its maximum lifetime ({lifetime:g} s); open a new one to go on",
            code=LIMIT_REACHED,
        )
        await self.send({"type": "websocket.send", "text": envelope(error)})
        await self.send({"type": "websocket.close", "code": _NORMAL_CLOSURE, "reason": LIMIT_REACHED})

    async def _on_message(self, message: Message) -> None:
        """A client message: a response started, or an error message answered."""
        running = self.running
        if running is not None and (running.done() or self._answered()):
            # The client has (or is about to have) the last response's end: it is only being tidied up (its record
            # written, the cache updated), which the next response waits for. (A task that has just ended is still
            # `running` until its done callback has run, a turn of the loop later.)
            with contextlib.suppress(BaseException):
                await running
            if self.running is running:
                self.running = None
        try:
            request, echoed, cached, size = self._parse(message)
        except RouterError as e:
            await self._error(e)
            return
        self.running = asyncio.ensure_future(self._respond(request, echoed, cached, size))
        self.running.add_done_callback(self._ended)

    def _answered(self) -> bool:
        current = self.current
        return self.answered or (current is not None and current.translator.status != "in_progress")

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.running is task:
            self.running = None

    def _parse(self, message: Message) -> tuple[ResponsesRequest, dict[str, Any], bool, int]:
        """A `response.create` message → the validated request, its echoed settings, whether it continues the
        cached response, and the message's size; a `RouterError` for anything else."""
        limits = self.app.settings.limits
        text = message.get("text")
        raw = text.encode() if text is not None else (message.get("bytes") or b"")
        if len(raw) > limits.max_body_bytes:
            raise request_too_large(limits.max_body_bytes)
        data = parse_json_object(raw, max_depth=limits.max_json_depth, what="the message")
        kind = data.pop("type", None)
        if kind != "response.create":
            raise invalid_request(
                f"unknown message type {kind!r}: this endpoint takes `response.create` messages",
                "type",
                code="unknown_message_type",
            )
        if self.running is not None:
            raise RouterError(
                409,
                "a response is already in progress on this connection: send the next `response.create` once it has "
                "ended (one response at a time per connection)",
                code="response_in_progress",
            )
        if data.get("background"):
            raise invalid_request(
                "background responses are not available over WebSocket (use POST /v1/responses)",
                "background",
                code="unsupported_parameter",
            )
        if self.app.draining:
            raise shutting_down()
        data["stream"] = True  # (a WebSocket response always streams; a `stream` sent is ignored)
        request, echoed = validate_request(data, max_input_items=limits.max_input_items)
        key = self.key
        if key.models is not None and not key.allows(request.model):
            raise model_not_allowed(key.name, request.model)
        cache = self.cache
        if cache is None or request.previous_response_id != cache.id:
            return request, echoed, False, len(raw)
        # The cached response's context and output, then this turn's input (the store is not asked).
        items = to_models(cache.items) + request.items()
        if len(items) > limits.max_input_items:
            raise invalid_request(
                f"the conversation has {len(items)} items with its earlier turns; the limit is "
                f"{limits.max_input_items} (start a new chain, or send a shorter context in input)",
                "previous_response_id",
                code="context_too_long",
            )
        return request.model_copy(update={"input": items, "previous_response_id": None}), echoed, True, len(raw)

    async def _respond(self, request: ResponsesRequest, echoed: dict[str, Any], cached: bool, size: int) -> None:
        """One response, run by the app's pipeline onto this connection; the cache kept up to date after it."""
        app = self.app
        made: list[Exchange] = []
        self.current, self.answered = None, False
        began = time.monotonic()
        log: dict[str, Any] = {"method": "WEBSOCKET", "path": PATH, "key": self.key.name}
        status = 500
        try:
            # (A 429 is an error message: WebSocket messages carry no headers.)
            status = await app.respond_for(
                self.key,
                size,
                request,
                echoed,
                self.send,
                self._disconnect,
                log,
                began,
                framing=MESSAGES,
                on_exchange=self._made(made),
                trace_parent=self.scope["headers"],
            )
        except RouterError as e:
            if e.status == 404 and e.param == "previous_response_id":
                e = RouterError(404, e.message, type=e.type, code="previous_response_not_found", param=e.param)
            status = e.status
            log["error_code"] = e.code
            self.answered = True
            with contextlib.suppress(Exception):
                await self._error(e)
        except ClientGone:
            status = 499
            app.heap.soon()
        except Exception:
            error_log.exception("unhandled error in a WebSocket response")
            self.answered = True
            with contextlib.suppress(Exception):
                await self._error(internal_error())
        finally:
            log["status"] = status
            log["duration_ms"] = round((time.monotonic() - began) * 1000, 3)
            if access_log.isEnabledFor(logging.INFO):
                log_line(access_log, pydantic_core.to_json(log).decode())
            app.metrics.request(log.get("provider", ""), status, True)
        self._remember(made[0] if made else None, cached)
        self.current = None

    def _made(self, made: list[Exchange]) -> Callable[[Exchange], None]:
        def on_exchange(ex: Exchange) -> None:
            made.append(ex)
            self.current = ex

        return on_exchange

    def _remember(self, ex: Exchange | None, cached: bool) -> None:
        """After a response: a `store: false` one that ended well is the connection's cache; a stored one replaces
        it (the store has it); a continuation of the cached one that failed evicts it."""
        translator = ex.translator if ex is not None else None
        if ex is None or translator is None or translator.status not in _ENDED:
            if cached:
                self.cache = None
            return
        if ex.record is not None:
            self.cache = None
            return
        context = [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in ex.request.items()]
        record = Record(id=translator.response_id, response=translator.response_json(), input_items=b"[]")
        self.cache = _Cached(translator.response_id, context + record_items(record))

    async def _disconnect(self) -> Message:
        """The `receive` the pump's disconnect watcher gets: `http.disconnect` once the client has gone."""
        await asyncio.shield(self.gone)
        return _DISCONNECT

    async def _error(self, error: RouterError) -> None:
        await self.send({"type": "websocket.send", "text": envelope(error)})


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

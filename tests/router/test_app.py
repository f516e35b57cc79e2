"""The ASGI app in-process, with a provider that breaks in ways a real upstream cannot be made to:
whatever goes wrong, the client gets a well-formed ending and the app keeps serving."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pydantic_core
import pytest

from ferroute.app import App
from ferroute.app.clock import WATCH_AFTER
from ferroute.models import ResponsesRequest
from ferroute.providers import Upstream
from ferroute.providers.anthropic import AnthropicDialect
from ferroute.providers.chat_completions import ChatCompletionsDialect
from ferroute.store.memory import MemoryStore
from tests.support.fixtures import FIXTURES
from tests.support.grammar import check_stream
from tests.support.inprocess import TEXT, app_streaming, app_with, call, call_with, mock_app


class Boom(RuntimeError):
    pass


def test_an_exception_mid_stream_ends_the_stream_cleanly() -> None:
    boundary = TEXT.index(b"\n\n", 400) + 2
    app = app_streaming([TEXT[:boundary], Boom("bug")])
    status, raw = asyncio.run(call(app, {"model": "m", "input": "hi", "stream": True}))
    assert status == 200
    events, response = check_stream(raw)
    assert response["status"] == "failed"
    assert response["error"]["code"] == "internal_error"
    assert events[-2]["error"]["type"] == "server_error"
    # Also when the exception strikes with an upstream event half read: the cause is reported, not the cut.
    _, raw = asyncio.run(
        call(app_streaming([TEXT[: boundary - 5], Boom("bug")]), {"model": "m", "input": "x", "stream": True})
    )
    assert check_stream(raw)[1]["error"]["code"] == "internal_error"


def test_an_exception_before_the_first_event_is_a_500() -> None:
    for stream in (False, True):
        status, raw = asyncio.run(call(app_streaming([Boom("bug")]), {"model": "m", "input": "hi", "stream": stream}))
        assert status == 500
        assert json.loads(raw)["error"] == {
            "message": "internal error in the router",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }


def test_a_broken_upstream_connection_lets_the_translator_decide() -> None:
    cut = app_streaming([TEXT[:400], httpx.ReadError("reset")])
    _, raw = asyncio.run(call(cut, {"model": "m", "input": "hi", "stream": True}))
    assert check_stream(raw)[1]["error"]["code"] == "upstream_stream_truncated"
    whole = app_streaming([TEXT, httpx.ReadError("reset")])  # everything arrived, [DONE] included
    _, raw = asyncio.run(call(whole, {"model": "m", "input": "hi", "stream": True}))
    assert check_stream(raw)[1]["status"] == "completed"


@pytest.mark.parametrize("path", ["/healthz", "/v1/models"])
def test_lifespan_and_plain_routes(path: str) -> None:
    app = app_streaming([TEXT])

    async def run() -> int:
        events = [{"type": "lifespan.shutdown"}, {"type": "lifespan.startup"}]
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return events.pop()

        async def send(message: Any) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan"}, receive, send)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert app.transport is None  # closed on shutdown
        status = 0

        async def send_http(message: Any) -> None:
            nonlocal status
            status = message.get("status", status)

        async def nothing() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        await app({"type": "http", "method": "GET", "path": path, "headers": []}, nothing, send_http)
        return status

    assert asyncio.run(run()) == 200


@pytest.mark.parametrize("split", ["one read", "two reads", "done alone"])
def test_the_record_is_stored_before_done_leaves(split: str) -> None:
    # Whether `[DONE]` arrives in the same upstream read as the rest (as a fast upstream sends it), or alone:
    # the store write completes before the client can see `[DONE]`, so a follow-up turn never finds nothing.
    done = TEXT.rindex(b"data: [DONE]")
    chunks = {"one read": [TEXT], "two reads": [TEXT[:400], TEXT[400:]], "done alone": [TEXT[:done], TEXT[done:]]}
    app = app_streaming(list(chunks[split]))
    order: list[str] = []
    put = app.store.put

    async def recording_put(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.01)  # a store that takes a moment
        await put(*args, **kwargs)
        order.append("stored")

    app.store.put = recording_put  # type: ignore[method-assign]
    messages = [{"type": "http.request", "body": b'{"model":"m","input":"hi","stream":true}', "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    out = bytearray()

    async def send(message: Any) -> None:
        body = message.get("body", b"")
        out.extend(body)
        if b"data: [DONE]" in body:
            order.append("done sent")

    scope = {"type": "http", "method": "POST", "path": "/v1/responses", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert order == ["stored", "done sent"]
    assert check_stream(bytes(out))[1]["status"] == "completed"


def test_an_upstream_that_never_ends_its_body_after_done_does_not_hold_the_client() -> None:
    drained: list[bool] = []

    async def stream() -> AsyncIterator[bytes]:
        yield TEXT
        try:
            await asyncio.Event().wait()  # an upstream that keeps its body open after `[DONE]`
        finally:
            drained.append(True)
        yield b""  # (unreachable)

    async def open_(request: ResponsesRequest, upstream_model: str, transport: httpx.AsyncBaseTransport) -> Upstream:
        return Upstream(chunks=stream())

    app = app_with(open_)
    status, raw = asyncio.run(asyncio.wait_for(call(app, {"model": "m", "input": "hi", "stream": True}), 5))
    assert status == 200
    assert check_stream(raw)[1]["status"] == "completed"
    assert drained == [True]  # given up on after a moment


@pytest.mark.parametrize(
    ("chunks", "body"),
    [
        ([TEXT], {"model": "m:p", "input": "hi"}),
        ([TEXT], {"model": "m:p", "input": "hi", "stream": True}),
        ([TEXT[:300], Boom("upstream library bug")], {"model": "m:p", "input": "hi", "stream": True}),
        ([TEXT], {"model": "m:p", "input": "hi", "store": False}),
        ([TEXT], {"model": "m:nowhere", "input": "hi"}),
        ([TEXT], {"model": "m:p", "input": 5}),
    ],
    ids=["whole", "stream", "stream-failing", "store-false", "unknown-provider", "bad-request"],
)
def test_a_request_leaves_no_reference_cycles(chunks: list[bytes | Exception], body: dict[str, Any]) -> None:
    """Per-request objects are freed by reference counting, not left for the cyclic collector (whose full
    passes pause the worker, and which would keep the translator's buffers alive until it runs)."""
    import gc

    app = app_streaming(chunks)

    async def run() -> int:
        await call(app, body)  # warm: lazy imports and caches
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                await call(app, body)
            await asyncio.sleep(0)
            gc.set_debug(gc.DEBUG_SAVEALL)
            found = gc.collect()
            garbage = sorted({type(o).__name__ for o in gc.garbage})
            assert found == 0, f"cyclic garbage per request: {found / 5:g} objects ({', '.join(garbage[:12])})"
            return found
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()

    asyncio.run(run())


def _hanging_app(closed: list[str]) -> App:
    """An app whose upstream sends nothing, and says when its body is closed (the upstream request cancelled)."""

    async def stream() -> AsyncIterator[bytes]:
        try:
            await asyncio.Event().wait()
        finally:
            closed.append("upstream closed")
        yield b""  # (unreachable)

    async def open_(request: ResponsesRequest, upstream_model: str, transport: httpx.AsyncBaseTransport) -> Upstream:
        return Upstream(chunks=stream())

    return app_with(open_)


@pytest.mark.parametrize("receive_kind", ["future", "coroutine"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_a_disconnect_cancels_the_work_at_once_and_leaves_nothing_running(receive_kind: str, stream: bool) -> None:
    """The work runs in the request's task; `receive()` is watched with a callback (Granian's returns a
    future) or a task (a coroutine, as other servers give): either way the disconnect cancels the
    upstream at once, and no task, clock entry or callback outlives the request."""
    closed: list[str] = []
    app = _hanging_app(closed)
    body = json.dumps({"model": "m", "input": "hi", "stream": stream}).encode()

    async def run() -> float:
        loop = asyncio.get_running_loop()
        gone = loop.create_future()
        loop.call_later(0.2, gone.set_result, {"type": "http.disconnect"})
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def wait_gone() -> dict[str, Any]:
            return await asyncio.shield(gone)

        def receive() -> Any:
            if messages:
                first = loop.create_future()
                first.set_result(messages.pop())
                return first if receive_kind == "future" else wait_for_result(first)
            return asyncio.shield(gone) if receive_kind == "future" else wait_gone()

        async def wait_for_result(future: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
            return await future

        async def send(message: Any) -> None:
            return None

        began = time.monotonic()
        scope = {"type": "http", "method": "POST", "path": "/v1/responses", "headers": []}
        await app(scope, receive, send)
        took = time.monotonic() - began
        await asyncio.sleep(0.05)  # (let cancelled callbacks run)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not others, others
        assert not app.clock.timed
        return took

    took = asyncio.run(run())
    assert closed == ["upstream closed"]
    assert took < 1.0  # the tick is 1 s here: the watcher, not the clock, ended it


def test_the_clock_times_out_a_silent_upstream_and_then_stops() -> None:
    closed: list[str] = []
    app = _hanging_app(closed)
    app.clock.tick = 0.05
    app.providers["p"].timeouts.first_event = 0.2

    async def run() -> tuple[int, bytes]:
        result = await call(app, {"model": "m", "input": "hi"})
        assert not app.clock.timed
        await asyncio.sleep(0.1)
        assert app.clock.handle is None  # nothing timed: the clock's chain has ended
        return result

    status, raw = asyncio.run(asyncio.wait_for(run(), 5))
    assert status == 504
    assert json.loads(raw)["error"]["code"] == "upstream_timeout"
    assert closed == ["upstream closed"]


async def _call_in_pieces(
    app: App, pieces: list[bytes], headers: list[tuple[bytes, bytes]], *, last: bool
) -> tuple[int, bytes]:
    """The body in `pieces`, each with `more_body` true (Granian sends a whole body that way, then an empty
    last message); with `last` false that last message never comes."""
    messages = [{"type": "http.request", "body": piece, "more_body": True} for piece in pieces]
    if last:
        messages.append({"type": "http.request", "body": b"", "more_body": False})
    return await asyncio.wait_for(call_with(app, messages, headers), 5)


def test_a_body_of_its_declared_length_is_whole_without_the_servers_empty_last_message() -> None:
    """Waiting for Granian's empty last message was a second hop from its Rust thread before the first event."""
    body = json.dumps({"model": "m", "input": "hi"}).encode()
    length = [(b"content-length", str(len(body)).encode())]
    for last in (False, True):
        status, raw = asyncio.run(_call_in_pieces(mock_app(), [body[:10], body[10:]], length, last=last))
        assert status == 200
        assert json.loads(raw)["status"] == "completed"
    # Without a length, the body ends only with the message that says so; the pieces are joined.
    status, raw = asyncio.run(_call_in_pieces(mock_app(), [body[:10], body[10:]], [], last=True))
    assert status == 200
    assert json.loads(raw)["status"] == "completed"


@pytest.mark.parametrize("upstream_wait", [0.0, WATCH_AFTER + 0.1], ids=["quick", "slow"])
def test_the_disconnect_watcher_asks_the_server_only_once_the_upstream_has_been_waited_for(
    upstream_wait: float,
) -> None:
    """Each `receive` of Granian's goes through its Rust thread (on the worker's core when pinned): made before
    the upstream request, it delayed it, and an exchange that ends within `WATCH_AFTER` never asks at all."""
    calls = 0
    at_open: list[int] = []

    async def open_(request: ResponsesRequest, upstream_model: str, transport: httpx.AsyncBaseTransport) -> Upstream:
        at_open.append(calls)
        await asyncio.sleep(upstream_wait)  # the upstream thinks; a slow one finds the watcher in place
        at_open.append(calls)
        return Upstream(chunks=_chunks([TEXT]))

    async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    app = app_with(open_)
    body = json.dumps({"model": "m", "input": "hi"}).encode()

    def receive() -> asyncio.Future[dict[str, Any]]:
        # As Granian's: a plain call that returns a future (the server's side starts at the call).
        nonlocal calls
        calls += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if calls == 1:
            future.set_result({"type": "http.request", "body": body, "more_body": False})
        return future

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/responses", "headers": []}

    async def run() -> None:
        await app(scope, receive, send)
        await asyncio.sleep(WATCH_AFTER + 0.05)  # (nothing is left to start watching later)

    asyncio.run(asyncio.wait_for(run(), 5))
    assert sent[0]["status"] == 200
    # The body only; then, for the slow upstream, the watcher too.
    assert at_open == ([1, 2] if upstream_wait else [1, 1])
    assert calls == (2 if upstream_wait else 1)


def test_the_store_indexes_only_item_ids_it_cannot_derive() -> None:
    """Items get ids made from their response's id (input items numbered from OUTPUT_ITEMS, output items from 0),
    which `response_of` reads back, so a response written with none given adds nothing to the store's index."""
    from ferroute.store.items import OUTPUT_ITEMS, item_id, response_of, to_index

    app = mock_app()
    assert isinstance(app.store, MemoryStore)
    given = {"type": "message", "role": "user", "content": "b", "id": "msg_given"}
    status, raw = asyncio.run(call(app, {"model": "m", "input": [{"role": "user", "content": "a"}, given]}))
    assert status == 200
    response = json.loads(raw)
    own = response["id"][5:]
    assert [item["id"] for item in response["output"]] == [f"msg_{own}0000"]
    assert app.store.items == {("anonymous", "msg_given"): response["id"]}
    record = app.store.records[("anonymous", response["id"])]
    assert [item["id"] for item in json.loads(record.input_items)] == [f"msg_{own}{OUTPUT_ITEMS:04x}", "msg_given"]
    for made in (f"msg_{own}0000", f"rs_{own}0001", f"fco_{own}{OUTPUT_ITEMS + 3:04x}"):
        assert response_of(made) == response["id"]
    assert response_of("msg_given") is None and response_of(f"msg_{own}") is None
    assert to_index([f"msg_{own}0000", "msg_given", f"msg_{'1' * 48}0000"], response["id"]) == [
        "msg_given",
        f"msg_{'1' * 48}0000",
    ]
    # A response id of another shape (a caller's own) gets random item ids, which are all indexed.
    odd = item_id("message", "resp_custom", OUTPUT_ITEMS)
    assert odd.startswith("msg_") and len(odd) == 52 and response_of(odd) is None
    assert to_index([odd], "resp_custom") == [odd]


# --- the writer owns the response: Python parses none of its output --------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize(
    ("dialect", "fixture", "include"),
    [
        (AnthropicDialect, "anthropic/claude-sonnet-4-thinking-tool-use.sse", True),  # sealed by the router
        (AnthropicDialect, "anthropic/claude-sonnet-4-thinking-tool-use.sse", False),  # the signature kept back
        (ChatCompletionsDialect, "chat_completions/deepseek-reasoner-reasoning-content.sse", True),
    ],
    ids=["anthropic-include", "anthropic-strip", "chat-include"],
)
def test_no_output_frame_or_response_object_is_parsed_again_in_python(
    monkeypatch: pytest.MonkeyPatch, dialect: Any, fixture: str, include: bool, stream: bool
) -> None:
    """Reasoning items' `encrypted_content` (sealed, or an upstream's own held back) is the Rust writer's work: no
    `json.loads` / `orjson.loads` / `pydantic_core.from_json` of anything it wrote, on the way to the client."""
    parsed: list[bytes] = []

    def counting(real: Callable[..., Any]) -> Callable[..., Any]:
        def loads(data: Any, *args: Any, **kwargs: Any) -> Any:
            parsed.append(data.encode() if isinstance(data, str) else bytes(data))
            return real(data, *args, **kwargs)

        return loads

    monkeypatch.setattr(json, "loads", counting(json.loads))
    monkeypatch.setattr(orjson, "loads", counting(orjson.loads))
    monkeypatch.setattr(pydantic_core, "from_json", counting(pydantic_core.from_json))
    raw = (FIXTURES / fixture).read_bytes()
    app = app_streaming([raw[i : i + 700] for i in range(0, len(raw), 700)], dialect)
    body: dict[str, Any] = {"model": "m", "input": "hi", "stream": stream}
    if include:
        body["include"] = ["reasoning.encrypted_content"]
    status, out = asyncio.run(call(app, body))
    assert status == 200, out
    written = [data for data in parsed if b'"sequence_number"' in data or b'"object":"response"' in data]
    assert not written, f"{len(written)} of the writer's outputs parsed again in Python: {written[0][:200]!r}"
    monkeypatch.undo()
    response = check_stream(out)[1] if stream else json.loads(out)
    reasoning = [item for item in response["output"] if item["type"] == "reasoning"]
    assert reasoning
    for item in reasoning:  # (and the policy held: sealed when asked, else the upstream's own is not shown)
        assert (
            (item["encrypted_content"] or "").startswith("ferroute1.") if include else item["encrypted_content"] is None
        )

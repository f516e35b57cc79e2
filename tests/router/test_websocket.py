"""WebSocket mode (`GET /v1/responses` upgraded) through a real `ferroute serve`, with the `websockets` client.

Every response's messages are checked with the grammar helper (`check_events`): one JSON event per message, one
`sequence_number` series per response, no `[DONE]`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support.grammar import check_events
from tests.support.servers import (
    ROUTER_ENV,
    ROUTER_KEY,
    Server,
    requests_seen,
    router,
    shared_router,
    shared_upstream,
    upstream_config,
)
from tests.support.tools import CALC, text_of, tools_config

TERMINAL = {"response.completed", "response.incomplete", "response.failed"}
FIXTURE = "fixture:openai-gpt-4o-mini-text-usage:up"


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://", 1) + "/v1/responses"


def recv(ws: ClientConnection) -> dict[str, Any]:
    message = ws.recv(timeout=30)
    assert isinstance(message, str), "every message is a text message"
    data: dict[str, Any] = json.loads(message)
    return data


def events_of(ws: ClientConnection) -> list[dict[str, Any]]:
    """One response's messages, up to its terminal event (or the error message that answered it instead)."""
    events: list[dict[str, Any]] = []
    while True:
        event = recv(ws)
        if event["type"] == "error" and "status" in event:  # (the envelope: no response was started)
            assert not events, events
            return [event]
        events.append(event)
        if event["type"] in TERMINAL:
            return events


def create(ws: ClientConnection, body: dict[str, Any]) -> list[dict[str, Any]]:
    ws.send(json.dumps({"type": "response.create", **body}))
    return events_of(ws)


def respond(ws: ClientConnection, body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A response that must stream: its events checked by the grammar; returns (events, final response)."""
    events = create(ws, body)
    assert events[0]["type"] != "error", events[0]
    return events, check_events(events)


def error_of(ws: ClientConnection, body: dict[str, Any] | str) -> dict[str, Any]:
    """The error envelope that answers a message."""
    ws.send(body if isinstance(body, str) else json.dumps(body))
    error = recv(ws)
    assert error["type"] == "error" and set(error) == {"type", "status", "error"}, error
    assert set(error["error"]) == {"type", "code", "message", "param"}, error
    return error


@pytest.fixture(scope="module")
def server() -> Server:
    return shared_router()


@pytest.mark.parametrize("model", ["m:mock", FIXTURE])
def test_a_text_answer(server: Server, model: str) -> None:
    with connect(ws_url(server)) as ws:
        events, response = respond(ws, {"model": model, "input": "Say hello."})
    assert response["status"] == "completed" and text_of(response)
    assert all(event["type"] != "error" for event in events)
    if model == FIXTURE:  # the same events as over SSE
        sse = httpx.post(f"{server.url}/v1/responses", json={"model": model, "input": "Say hello.", "stream": True})
        kinds = [line[7:] for line in sse.text.splitlines() if line.startswith("event: ")]
        assert kinds == [event["type"] for event in events]


def _upstream_saw(tag: str) -> list[dict[str, Any]]:
    return [r for r in requests_seen(shared_upstream()) if tag in json.dumps(r["body"])]


@pytest.mark.parametrize("store", [True, False])
def test_responses_one_after_another_continue_the_last(server: Server, store: bool) -> None:
    tag = f"ws-chain-{store}-{time.monotonic_ns()}"
    with connect(ws_url(server)) as ws:
        _, first = respond(ws, {"model": FIXTURE, "input": f"first {tag}", "store": store})
        body = {"model": FIXTURE, "input": f"second {tag}", "store": store, "previous_response_id": first["id"]}
        _, second = respond(ws, body)
        assert second["previous_response_id"] == first["id"] and second["store"] is store
        body = {"model": FIXTURE, "input": f"third {tag}", "store": store, "previous_response_id": second["id"]}
        _, third = respond(ws, body)
    assert third["status"] == "completed"
    # The upstream got each turn's context: the earlier inputs and answers, then the new input.
    last = json.dumps(_upstream_saw(f"third {tag}")[-1]["body"])
    assert f"first {tag}" in last and f"second {tag}" in last
    assert last.count(text_of(first)) >= 2  # (the two earlier answers, both the fixture's text)
    stored = httpx.get(f"{server.url}/v1/responses/{first['id']}")
    assert stored.status_code == (200 if store else 404)


def test_store_false_continues_only_from_the_last_response(server: Server) -> None:
    with connect(ws_url(server)) as ws:
        _, first = respond(ws, {"model": "m:mock", "input": "one", "store": False})
        _, second = respond(ws, {"model": "m:mock", "input": "two", "store": False})
        # The cache holds the last response only; the first was never stored.
        error = error_of(ws, {"type": "response.create", "model": "m:mock", "input": "x",
                              "previous_response_id": first["id"]})  # fmt: skip
        assert error["status"] == 404
        assert error["error"]["code"] == "previous_response_not_found"
        assert error["error"]["param"] == "previous_response_id"
        # The connection goes on; the last response still continues.
        _, third = respond(ws, {"model": "m:mock", "input": "three", "previous_response_id": second["id"]})
    assert third["status"] == "completed"


def test_an_unknown_previous_response_id(server: Server) -> None:
    with connect(ws_url(server)) as ws:
        body = {"type": "response.create", "model": "m:mock", "input": "x", "previous_response_id": "resp_nope"}
        error = error_of(ws, body)
        assert error["status"] == 404 and error["error"]["code"] == "previous_response_not_found"
        _, response = respond(ws, {"model": "m:mock", "input": "still here"})
    assert response["status"] == "completed"


def test_a_failed_continuation_evicts_the_cached_response(server: Server) -> None:
    with connect(ws_url(server)) as ws:
        _, first = respond(ws, {"model": "m:mock", "input": "one", "store": False})
        # The continuation fails (nothing listens where `dead` points): an error message, no response.
        body = {"type": "response.create", "model": "x:dead", "input": "two", "store": False,
                "previous_response_id": first["id"]}  # fmt: skip
        error = error_of(ws, body)
        assert error["status"] >= 500, error
        # A retry cannot build on the cached response any more.
        retry = error_of(ws, {**body, "model": "m:mock"})
        assert retry["error"]["code"] == "previous_response_not_found"


def test_a_failed_stream_ends_in_band_and_the_connection_goes_on(server: Server) -> None:
    with connect(ws_url(server)) as ws:
        events, response = respond(ws, {"model": "fixture:groq-gpt-oss-reasoning-then-event-error:up", "input": "x"})
        assert response["status"] == "failed"
        assert "error" in [event["type"] for event in events]
        _, after = respond(ws, {"model": "m:mock", "input": "again"})
    assert after["status"] == "completed"


def test_one_response_at_a_time(server: Server) -> None:
    with connect(ws_url(server)) as ws:
        ws.send(json.dumps({"type": "response.create", "model": "slow?drip=0.05:up", "input": "x"}))
        first = recv(ws)
        assert first["type"] == "response.created"
        ws.send(json.dumps({"type": "response.create", "model": "m:mock", "input": "y"}))
        events = [first]
        error = None
        while True:  # the running response goes on; the second create is answered with an error message
            event = recv(ws)
            if event["type"] == "error" and "status" in event:
                error = event
                continue
            events.append(event)
            if event["type"] in TERMINAL:
                break
        assert error is not None and error["status"] == 409
        assert error["error"]["code"] == "response_in_progress"
        assert check_events(events)["status"] == "completed"
        _, after = respond(ws, {"model": "m:mock", "input": "z"})
    assert after["status"] == "completed"


@pytest.mark.parametrize(
    ("message", "code", "param"),
    [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        (json.dumps({"type": "response.cancel"}), "unknown_message_type", "type"),
        (json.dumps({"model": "m:mock", "input": "x"}), "unknown_message_type", "type"),
        (json.dumps({"type": "response.create", "input": "x"}), "missing_required_parameter", "model"),
        (json.dumps({"type": "response.create", "model": "m:mock", "input": "x", "temperature": "hot"}), None,
         "temperature"),
        (json.dumps({"type": "response.create", "model": "m:mock", "input": "x", "background": True}),
         "unsupported_parameter", "background"),
    ],
)  # fmt: skip
def test_bad_messages_are_error_messages(server: Server, message: str, code: str | None, param: str | None) -> None:
    with connect(ws_url(server)) as ws:
        error = error_of(ws, message)
        assert error["status"] == 400
        assert error["error"]["type"] == "invalid_request_error"
        if code is not None:
            assert error["error"]["code"] == code, error
        assert error["error"]["param"] == param, error
        _, response = respond(ws, {"model": "m:mock", "input": "the connection is still usable"})
    assert response["status"] == "completed"


def test_a_client_that_goes_away_cancels_its_response(server: Server) -> None:
    tag = f"ws-gone-{time.monotonic_ns()}"
    with connect(ws_url(server)) as ws:
        ws.send(json.dumps({"type": "response.create", "model": f"slow?drip=0.25&tag={tag}:up", "input": "x"}))
        created = recv(ws)
        response_id = created["response"]["id"]
        recv(ws)
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        got = httpx.get(f"{server.url}/v1/responses/{response_id}")
        status = got.json()["status"] if got.status_code == 200 else got.status_code
        if status not in ("in_progress", 404):
            break
        time.sleep(0.05)
    assert status == "cancelled"
    # The upstream request was cut too.
    while time.monotonic() < deadline:
        seen = [r for r in requests_seen(shared_upstream()) if tag in r["path"] or tag in json.dumps(r["body"])]
        if seen and seen[-1].get("closed_early"):
            break
        time.sleep(0.05)
    assert seen and seen[-1].get("closed_early"), seen


# --- a router with keys and a short connection lifetime ------------------------------------------------------------

LIFETIME = 3.0


@pytest.fixture(scope="module")
def keyed() -> Iterator[Server]:
    extra = f'api_keys = ["{ROUTER_KEY}"]\nwebsocket_max_lifetime = {LIFETIME}'
    with router(upstream_config(shared_upstream().url, extra), env=ROUTER_ENV) as server:
        yield server


AUTH = {"Authorization": f"Bearer {ROUTER_KEY}"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": ROUTER_KEY}])
def test_the_upgrade_needs_a_key(keyed: Server, headers: dict[str, str]) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(keyed), additional_headers=headers)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == "invalid_api_key"


def test_a_keyed_connection_lasts_its_lifetime(keyed: Server) -> None:
    began = time.monotonic()
    with connect(ws_url(keyed), additional_headers=AUTH) as ws:
        _, response = respond(ws, {"model": "m:mock", "input": "x"})
        assert response["status"] == "completed"
        error = recv(ws)  # (nothing else is sent until the lifetime has passed)
        assert error["type"] == "error" and error["error"]["code"] == "websocket_connection_limit_reached"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert ws.close_code == 1000 and ws.close_reason == "websocket_connection_limit_reached"
    assert LIFETIME - 0.5 <= time.monotonic() - began < LIFETIME + 5


def test_other_paths_refuse_the_upgrade(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(server.url.replace("http://", "ws://", 1) + "/v1/models")
    assert refused.value.response.status_code == 404


# --- the hosted-tool loop -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tooled() -> Iterator[Server]:
    with router(tools_config(), env=ROUTER_ENV) as server:
        yield server


def test_a_hosted_tool_loop(tooled: Server) -> None:
    with connect(ws_url(tooled)) as ws:
        events, response = respond(ws, {"model": "m:mock", "input": "Please add 2 and 3.", "tools": [CALC]})
        assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "mcp_call", "message"]
        call = response["output"][1]
        assert call["output"] in ("5", "5.0") and call["status"] == "completed"
        assert "response.mcp_call.completed" in [event["type"] for event in events]
        # The next turn continues from it (the listed tools come with the context: no second listing).
        body = {
            "model": "m:mock",
            "input": "Please add 4 and 5.",
            "tools": [CALC],
            "previous_response_id": response["id"],
        }
        _, second = respond(ws, body)
    assert [item["type"] for item in second["output"]] == ["mcp_call", "message"]


def test_responses_back_to_back_on_busy_connections_never_meet_the_last_one(server: Server) -> None:
    """A `response.create` sent the moment the last response's terminal event arrives is the next response, never
    a `response_in_progress` error: the last one's task may have ended without its done callback having run yet
    (several connections at once make that turn of the loop likely; it was seen as a client waiting forever)."""

    def session(_: int) -> list[str]:
        outcomes = []
        with connect(ws_url(server)) as ws:
            for _ in range(60):
                events = create(ws, {"model": FIXTURE, "input": "hi", "store": False})
                outcomes.append(events[-1]["type"] if events[0]["type"] != "error" else events[0]["error"]["code"])
        return outcomes

    with ThreadPoolExecutor(4) as pool:
        outcomes = [o for session_outcomes in pool.map(session, range(4)) for o in session_outcomes]
    assert outcomes == ["response.completed"] * 240, sorted(set(outcomes))


# (openai 3.54 opens its socket with `websockets.sync.client.connect(...)` outside a `with`, which websockets 17.1
# deprecates with a warning; the warning is the SDK's, not the router's.)
@pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
def test_the_openai_sdks_websocket_api(server: Server) -> None:
    """The `openai` SDK's own WebSocket client (`client.responses.connect()`, openai 3.x): two responses on one
    connection, the second continuing the first from the connection's cache (`store: false`), every event parsed
    into the SDK's types; and an error message for an unknown `previous_response_id`, the connection still usable."""
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    with client.responses.connect() as connection:
        previous: str | None = None
        answers = []
        for text in ("Say hello.", "And again."):
            connection.response.create(model="m:mock", input=text, store=False, previous_response_id=previous)
            events = []
            for event in connection:
                events.append(event)
                if event.type in TERMINAL or event.type == "error":
                    break
            check_events([event.model_dump(mode="json", exclude_unset=True) for event in events])
            done = events[-1]
            assert done.type == "response.completed", done
            assert isinstance(done, openai.types.responses.ResponseCompletedEvent)
            answers.append("".join(e.delta for e in events if e.type == "response.output_text.delta"))
            assert done.response.output_text == answers[-1] and text in answers[-1]
            if previous is not None:
                assert done.response.previous_response_id == previous
            previous = done.response.id

        connection.response.create(model="m:mock", input="hi", store=False, previous_response_id="resp_unknown")
        error = connection.recv()
        assert error.type == "error", error
        assert error.model_dump()["error"]["code"] == "previous_response_not_found", error
        connection.response.create(model="m:mock", input="still there?", store=False)
        for event in connection:
            if event.type in TERMINAL:
                assert event.type == "response.completed"
                break

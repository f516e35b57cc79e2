"""`background: true`: answered at once, run on, watched with GET and stopped with `/cancel` — on one
instance, and across two instances sharing Redis (the GET and the cancel reach another process)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.grammar import check_events, check_stream, split_sse, validate_response
from tests.support.servers import (
    ROUTER_ENV,
    Server,
    create,
    create_ok,
    redis_server,
    router,
    shared_upstream,
    store_section,
    stream,
    upstream_config,
)

# The mock upstream's generated text, one event every 0.15 s (about 1.2 s in all).
SLOW = "slow?drip=0.15:up"
SLOWER = "slower?drip=0.5:up"


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Server, Server]]:
    """Two instances sharing one Redis."""
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        config = upstream_config(shared_upstream().url, store_section("redis", redis.url, "background_interval = 0.1"))
        one = stack.enter_context(router(config, env=ROUTER_ENV))
        two = stack.enter_context(router(config, env=ROUTER_ENV))
        yield one, two


def _get(server: Server, rid: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/responses/{rid}", timeout=10)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    validate_response(data)
    return data


def _wait(server: Server, rid: str, timeout: float = 10) -> tuple[dict[str, Any], set[str]]:
    """Poll until the response is finished; returns it and every status seen on the way."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = _get(server, rid)
        seen.add(data["status"])
        if data["status"] not in ("queued", "in_progress"):
            return data, seen
        time.sleep(0.05)
    raise AssertionError(f"{rid} did not finish: {seen}")


def test_runs_on_and_another_instance_answers_the_get(pair: tuple[Server, Server]) -> None:
    one, two = pair
    began = time.monotonic()
    queued = create_ok(one, {"model": SLOW, "input": "hi", "background": True})
    assert time.monotonic() - began < 1.0  # did not wait for the upstream
    assert queued["status"] == "queued"
    assert queued["background"] is True
    final, seen = _wait(two, queued["id"])
    assert "in_progress" in seen
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello from the mock upstream."
    # It is a stored response like any other: continue from it.
    follow = create_ok(two, {"model": "m:mock", "input": "more", "previous_response_id": queued["id"]})
    assert follow["status"] == "completed"


@pytest.mark.parametrize("where", ["same", "other"])
def test_cancel(pair: tuple[Server, Server], where: str) -> None:
    one, two = pair
    queued = create_ok(one, {"model": SLOWER, "input": "hi", "background": True})
    time.sleep(0.6)
    target = one if where == "same" else two
    cancelled = httpx.post(f"{target.url}/v1/responses/{queued['id']}/cancel", timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    time.sleep(0.3)
    for server in pair:
        assert _get(server, queued["id"])["status"] == "cancelled"  # and the worker did not overwrite it
    # Cancelling a finished response changes nothing.
    again = httpx.post(f"{two.url}/v1/responses/{queued['id']}/cancel", timeout=10)
    assert again.json()["status"] == "cancelled"


def test_rules(pair: tuple[Server, Server]) -> None:
    one, _ = pair
    unstored = create(one, {"model": SLOW, "input": "hi", "background": True, "store": False})
    assert unstored.status_code == 400
    assert unstored.json()["error"]["param"] == "store"
    plain = create_ok(one, {"model": "m:mock", "input": "hi"})
    refused = httpx.post(f"{one.url}/v1/responses/{plain['id']}/cancel", timeout=10)
    assert refused.status_code == 400
    assert httpx.post(f"{one.url}/v1/responses/resp_nope/cancel", timeout=10).status_code == 404


def test_a_failing_upstream_ends_failed(pair: tuple[Server, Server]) -> None:
    one, _ = pair
    queued = create_ok(one, {"model": "status:500:up", "input": "hi", "background": True})
    final, _ = _wait(one, queued["id"])
    assert final["status"] == "failed"
    assert final["error"]["code"] == "upstream_error"


# --- streamed background responses: followed, left, resumed ------------------------------------------------------


def _events_until(server: Server, body: dict[str, Any], count: int) -> tuple[list[dict[str, Any]], bytes]:
    """POST a streamed request and read its first `count` events, then hang up: (those events, their raw bytes)."""
    raw = b""
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=30) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            raw += chunk
            events, _ = split_sse(raw)
            if len(events) >= count:
                break
    return split_sse(raw)[0][:count], raw


def _follow(server: Server, rid: str, query: str = "") -> bytes:
    with httpx.stream("GET", f"{server.url}/v1/responses/{rid}?stream=true{query}", timeout=30) as r:
        raw = r.read()
        assert r.status_code == 200, raw
        assert r.headers["content-type"].startswith("text/event-stream")
    return raw


def test_a_streamed_background_response_outlives_its_client_and_is_resumed_elsewhere(
    pair: tuple[Server, Server],
) -> None:
    one, two = pair
    body = {"model": SLOWER, "input": "hi", "background": True, "stream": True}
    first, _ = _events_until(one, body, 4)  # (created, in_progress, the message's item and part: then gone)
    rid = first[0]["response"]["id"]
    last = first[-1]["sequence_number"]
    # Another instance replays what came after and follows the rest live, to the end.
    rest, done = split_sse(_follow(two, rid, f"&starting_after={last}"))
    assert done and rest[0]["sequence_number"] == last + 1
    events = first + rest
    check_events(events)  # (one valid stream: contiguous numbers, one terminal event)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello from the mock upstream."
    # Ended: the whole stream again, from either instance, byte for byte the same.
    replays = [_follow(server, rid) for server in pair]
    assert replays[0] == replays[1]
    assert check_stream(replays[0])[0] == events
    assert _get(one, rid)["status"] == "completed"


def test_the_creating_client_can_follow_to_the_end(pair: tuple[Server, Server]) -> None:
    one, _ = pair
    events, response = stream(one, {"model": SLOW, "input": "hi", "background": True})
    assert response["status"] == "completed" and response["background"] is True
    assert _follow(one, response["id"], f"&starting_after={events[-2]['sequence_number']}") == (
        f"event: response.completed\ndata: {json.dumps(events[-1], separators=(',', ':'))}\n\n".encode()
        + b"data: [DONE]\n\n"
    )


def test_the_openai_sdk_resumes_a_background_stream(pair: tuple[Server, Server]) -> None:
    one, two = pair
    client = openai.OpenAI(base_url=f"{one.url}/v1", api_key="unused")
    seen = []
    with client.responses.create(model=SLOWER, input="hi", background=True, stream=True) as events:
        for event in events:
            seen.append(event)
            if len(seen) == 5:
                break
    other = openai.OpenAI(base_url=f"{two.url}/v1", api_key="unused")
    with other.responses.retrieve(seen[0].response.id, stream=True, starting_after=seen[-1].sequence_number) as rest:
        resumed = list(rest)
    numbers = [e.sequence_number for e in seen + resumed]
    assert numbers == list(range(len(numbers)))
    assert resumed[-1].type == "response.completed"
    assert resumed[-1].response.output_text == "Hello from the mock upstream."


def test_a_cancelled_background_stream_ends_for_its_followers(pair: tuple[Server, Server]) -> None:
    one, two = pair
    first, _ = _events_until(one, {"model": SLOWER, "input": "hi", "background": True, "stream": True}, 2)
    rid = first[0]["response"]["id"]
    cancelled = httpx.post(f"{two.url}/v1/responses/{rid}/cancel", timeout=10)
    assert cancelled.json()["status"] == "cancelled"
    events, done = split_sse(_follow(one, rid))
    assert done and events[-1]["type"] == "response.failed"
    assert next(e for e in events if e["type"] == "error")["code"] == "cancelled"
    check_events(events)


def test_stream_rules(pair: tuple[Server, Server]) -> None:
    one, _ = pair
    plain = create_ok(one, {"model": "m:mock", "input": "hi"})
    refused = httpx.get(f"{one.url}/v1/responses/{plain['id']}?stream=true", timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stream"
    background = create_ok(one, {"model": "m:mock", "input": "hi", "background": True})
    assert httpx.get(f"{one.url}/v1/responses/{background['id']}?stream=true", timeout=10).status_code == 400
    _, response = stream(one, {"model": "m:mock", "input": "hi", "background": True})
    bad = httpx.get(f"{one.url}/v1/responses/{response['id']}?stream=true&starting_after=x", timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "starting_after"
    assert httpx.get(f"{one.url}/v1/responses/resp_nope?stream=true", timeout=10).status_code == 404
    # `stream=false` is the plain GET.
    assert httpx.get(f"{one.url}/v1/responses/{response['id']}?stream=false", timeout=10).json()["id"] == response["id"]

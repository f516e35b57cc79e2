"""Several router processes sharing one store: a conversation that hops between instances (and
between the workers of one instance) with `previous_response_id`, and a store that goes away."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.servers import (
    ROUTER_ENV,
    Server,
    create,
    create_ok,
    redis_server,
    requests_seen,
    router,
    shared_upstream,
    store_section,
    stream,
    upstream_config,
)

TOOL_FIXTURE = "fixture:openai-gpt-4o-mini-tool-call-usage"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


@pytest.fixture(scope="module")
def redis() -> Iterator[Server]:
    with redis_server() as server:
        yield server


def _as_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a Chat Completions upstream must be sent for a response's output items next turn."""
    message: dict[str, Any] = {"role": "assistant"}
    for item in output:
        if item["type"] == "message":
            message["content"] = "".join(part["text"] for part in item["content"])
        elif item["type"] == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}  # fmt: skip
            message.setdefault("tool_calls", []).append(call)
    message.setdefault("content", None)
    return [message]


def converse(servers: list[Server]) -> list[str]:
    """Five turns, each on the next server in turn, with a function-call round trip in the middle. The
    upstream must receive the whole conversation so far, in order, every turn. Returns the response ids."""
    tag = f"c{time.monotonic_ns()}"
    expected: list[dict[str, Any]] = []
    previous: str | None = None
    ids: list[str] = []
    call_id = ""
    for turn in range(5):
        server = servers[turn % len(servers)]
        body: dict[str, Any] = {"model": f"a?tag={tag}-{turn}:up", "tools": [WEATHER]}
        if turn == 1:
            body["model"] = f"{TOOL_FIXTURE}?tag={tag}-{turn}:up"
            body["input"] = "What is the weather in Paris?"
            new = [{"role": "user", "content": body["input"]}]
        elif turn == 2:
            body["input"] = [{"type": "function_call_output", "call_id": call_id, "output": "21 C"}]
            new = [{"role": "tool", "tool_call_id": call_id, "content": "21 C"}]
        else:
            body["input"] = f"turn {turn}"
            new = [{"role": "user", "content": body["input"]}]
        if previous is not None:
            body["previous_response_id"] = previous
        if turn == 3:
            _, response = stream(server, body)
        else:
            response = create_ok(server, body)
        assert response["status"] == "completed", response
        [sent] = [r for r in requests_seen(shared_upstream()) if r["body"]["model"].endswith(f"tag={tag}-{turn}")]
        expected += new
        assert sent["body"]["messages"] == expected, f"turn {turn}"
        expected += _as_messages(response["output"])
        if turn == 1:
            [call] = [item for item in response["output"] if item["type"] == "function_call"]
            call_id = call["call_id"]
        previous = response["id"]
        ids.append(previous)
    return ids


def test_two_instances_share_one_redis(redis: Server) -> None:
    config = upstream_config(shared_upstream().url, store_section("redis", redis.url))
    with router(config, env=ROUTER_ENV) as one, router(config, env=ROUTER_ENV) as two:
        ids = converse([one, two])
        # Either instance answers for any of them.
        for rid in ids:
            for server in (one, two):
                assert httpx.get(f"{server.url}/v1/responses/{rid}").json()["id"] == rid


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_two_workers_on_one_port(redis: Server, backend: str) -> None:
    config = upstream_config(shared_upstream().url, store_section(backend, redis.url if backend == "redis" else None))
    with router(config, env=ROUTER_ENV, extra_args=["--workers", "2"]) as server:
        converse([server])
        # Both workers served (pids differ in the access log is not visible; the ids being readable is the test).
        ids = converse([server, server])
        assert all(httpx.get(f"{server.url}/v1/responses/{rid}").status_code == 200 for rid in ids)


def test_a_store_outage(redis: Server) -> None:
    with contextlib.ExitStack() as stack:
        own = stack.enter_context(redis_server())
        config = upstream_config(shared_upstream().url, store_section("redis", own.url))
        server = stack.enter_context(router(config, env=ROUTER_ENV))
        before = create_ok(server, {"model": "m:mock", "input": "hi"})
        own.process.kill()
        own.process.wait(timeout=10)
        # Reads: a clear 503, before anything goes upstream.
        got = httpx.get(f"{server.url}/v1/responses/{before['id']}", timeout=10)
        assert got.status_code == 503
        assert got.json()["error"]["code"] == "store_unavailable"
        assert "redis://" not in got.text
        follow = create(server, {"model": "m:mock", "input": "x", "previous_response_id": before["id"]})
        assert follow.status_code == 503
        # A write after a stream: the client's stream is whole; the failure is counted.
        _, response = stream(server, {"model": "m:mock", "input": "still there?"})
        assert response["status"] == "completed"
        metrics = httpx.get(f"{server.url}/metrics").text
        match = re.search(r'ferroute_store_errors_total\{op="write"\} (\d+)', metrics)
        assert match is not None and int(match.group(1)) >= 1
        # store: false needs no store at all.
        assert create_ok(server, {"model": "m:mock", "input": "x", "store": False})["status"] == "completed"

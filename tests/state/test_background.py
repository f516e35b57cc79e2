"""`background: true`: answered at once, run on, watched with GET and stopped with `/cancel` — on one
instance, and across two instances sharing Redis (the GET and the cancel reach another process)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.grammar import validate_response
from tests.support.servers import (
    ROUTER_ENV,
    Server,
    create,
    create_ok,
    redis_server,
    router,
    shared_upstream,
    store_section,
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

"""`[[keys]]`: keys with names, model globs and limits, through a real `ferroute serve` and the mock upstream.

Limits are checked on what a client sees: the 429 (`rate_limit_exceeded`, `Retry-After`), OpenAI's `x-ratelimit-*`
headers on every answer, the openai SDK's `RateLimitError`, and that the limits hold across two workers (a shared
file) and across two instances (Redis)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from websockets.sync.client import connect

from tests.support.servers import (
    ROUTER_ENV,
    Server,
    create,
    redis_server,
    requests_seen,
    router,
    shared_upstream,
    store_section,
    upstream_config,
)

FIXTURE = "fixture:openai-gpt-4o-mini-text-usage:up"  # usage: 78 input + 9 output tokens
HASHED = "sk-team-hashed-4c1d"
FROM_ENV = "sk-team-env-77aa"
PLAIN = "sk-plain-default-1"
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")


def keys_config(keys: str, extra: str = "") -> str:
    return upstream_config(shared_upstream().url, f'api_keys = ["{PLAIN}"]\n{extra}') + keys


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def body(model: str = FIXTURE, **more: Any) -> dict[str, Any]:
    return {"model": model, "input": "hi", "store": False, **more}


@pytest.fixture(scope="module")
def redis() -> Iterator[Server]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    config = keys_config(f"""
[[keys]]
name = "hashed"
key_sha256 = "{hashlib.sha256(HASHED.encode()).hexdigest()}"
models = ["fixture:*:up", "mock*"]

[[keys]]
name = "env"
key_env = "TEAM_ENV_KEY"
requests_per_minute = 2
""")
    with router(config, env={**ROUTER_ENV, "TEAM_ENV_KEY": FROM_ENV}) as r:
        yield r


def test_a_hashed_key_and_an_env_key_are_accepted_and_others_are_not(server: Server) -> None:
    assert create(server, body(), headers=auth(HASHED)).status_code == 200
    assert create(server, body(), headers=auth(PLAIN)).status_code == 200
    wrong = create(server, body(), headers=auth("sk-team-hashed-4c1e"))
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert create(server, body()).status_code == 401
    # The key's digest, however the config gives it, names the same tenant: a response stored under the hashed key
    # is found with it and with no other.
    stored = create(server, body(store=True), headers=auth(HASHED)).json()
    assert httpx.get(f"{server.url}/v1/responses/{stored['id']}", headers=auth(HASHED)).status_code == 200
    assert httpx.get(f"{server.url}/v1/responses/{stored['id']}", headers=auth(PLAIN)).status_code == 404


def test_a_key_without_limits_gets_no_ratelimit_headers(server: Server) -> None:
    answer = create(server, body(), headers=auth(HASHED))
    assert answer.status_code == 200
    assert not [name for name in answer.headers if name.startswith("x-ratelimit")]


def test_a_model_outside_the_globs_is_403_before_anything_goes_upstream(server: Server) -> None:
    upstream = shared_upstream()
    before = len(requests_seen(upstream))
    for model in ("fixture:openai-gpt-4o-mini-text-usage:oai", "gpt-4o:up"):
        answer = create(server, body(model), headers=auth(HASHED))
        assert answer.status_code == 403, answer.text
        error = answer.json()["error"]
        assert error["code"] == "model_not_allowed"
        assert error["param"] == "model"
    assert len(requests_seen(upstream)) == before
    assert create(server, body("mock-model:mock"), headers=auth(HASHED)).status_code == 200
    # The same over WebSocket: an error message, the connection goes on.
    with connect(server.url.replace("http://", "ws://") + "/v1/responses", additional_headers=auth(HASHED)) as ws:
        ws.send(json.dumps({"type": "response.create", **body("gpt-4o:up")}))
        message = json.loads(ws.recv(timeout=30))
        assert message["type"] == "error"
        assert (message["status"], message["error"]["code"]) == (403, "model_not_allowed")
    # And for compaction.
    compact = httpx.post(
        f"{server.url}/v1/responses/compact", json={"model": "gpt-4o:up", "input": "hi"}, headers=auth(HASHED)
    )
    assert compact.status_code == 403


def test_requests_per_minute(server: Server) -> None:
    first = create(server, body(), headers=auth(FROM_ENV))
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert DURATION.match(first.headers["x-ratelimit-reset-requests"])
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body(stream=True), headers=auth(FROM_ENV)) as second:
        assert second.status_code == 200
        assert second.headers["content-type"].startswith("text/event-stream")
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        second.read()
    third = create(server, body(), headers=auth(FROM_ENV))
    assert third.status_code == 429
    error = third.json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "too_many_requests")
    assert "requests per minute" in error["message"]
    # Two a minute: the next one is allowed 30 s after the first.
    assert 1 <= int(third.headers["retry-after"]) <= 30
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert DURATION.match(third.headers["x-ratelimit-reset-requests"])
    # Other keys are not held back by this one's limit.
    assert create(server, body(), headers=auth(PLAIN)).status_code == 200
    # The access log names the key, never the key itself.
    deadline = time.monotonic() + 10
    while '"key":"env"' not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log()
    assert '"key":"env"' in log and '"key":"hashed"' in log and '"key":"default"' in log
    assert FROM_ENV not in log and HASHED not in log


def test_the_openai_sdk_sees_a_rate_limit_error() -> None:
    config = keys_config('[[keys]]\nname = "one"\nkey = "sk-one-a-minute"\nrequests_per_minute = 1\n')
    with router(config, env=ROUTER_ENV) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-one-a-minute", max_retries=0)
        client.responses.create(model=FIXTURE, input="hi")
        with pytest.raises(openai.RateLimitError) as caught:
            client.responses.create(model=FIXTURE, input="hi")
        assert caught.value.code == "rate_limit_exceeded"
        assert int(caught.value.response.headers["retry-after"]) >= 1


def test_a_missing_key_variable_is_a_startup_error() -> None:
    config = keys_config('[[keys]]\nname = "x"\nkey_env = "FERROUTE_TEST_UNSET_KEY"\n')
    with pytest.raises(RuntimeError, match="FERROUTE_TEST_UNSET_KEY"), router(config, env=ROUTER_ENV):
        pass


TOKENS = '[[keys]]\nname = "tokens"\nkey = "sk-tokens"\ntokens_per_minute = 60\n'
CONCURRENT = '[[keys]]\nname = "one-at-a-time"\nkey = "sk-one-at-a-time"\nmax_concurrent = 1\n'
REQUESTS = '[[keys]]\nname = "three"\nkey = "sk-three"\nrequests_per_minute = 3\n'


def check_tokens(server: Server) -> None:
    """60 tokens a minute: a request's input estimated at ~16 tokens is admitted; its usage (87 tokens) is settled
    at its end, so the next one is refused (without the settlement it would fit)."""
    first = create(server, body(), headers=auth("sk-tokens"))
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-tokens"] == "60"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) >= 30
    second = create(server, body(), headers=auth("sk-tokens"))
    assert second.status_code == 429, second.text
    assert "tokens per minute" in second.json()["error"]["message"]
    assert second.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(second.headers["retry-after"]) > 20  # (87 + 16 tokens owed at one a second, less the minute)


def test_a_compaction_settles_its_tokens() -> None:
    """`/v1/responses/compact` under a token limit: admitted on its body's estimate (a few tokens), then settled
    with what the summarising call used (the fixture's 87 tokens), so the next request is refused (with the
    estimate standing, ~20 of 60 would be spent and it would fit)."""
    with router(keys_config(TOKENS), env=ROUTER_ENV) as server:
        compact = httpx.post(
            f"{server.url}/v1/responses/compact", json={"model": FIXTURE, "input": "hi"}, headers=auth("sk-tokens")
        )
        assert compact.status_code == 200, compact.text
        assert compact.json()["usage"]["total_tokens"] == 87
        assert int(compact.headers["x-ratelimit-remaining-tokens"]) >= 30  # (before the settlement)
        after = create(server, body(), headers=auth("sk-tokens"))
        assert after.status_code == 429, after.text
        assert "tokens per minute" in after.json()["error"]["message"]


def check_concurrency(server: Server) -> None:
    """One in flight: a stream held open (the upstream stalls) makes the next request a 429; once the client drops
    it, the slot is free again."""
    stalled = body("stall:up", stream=True)
    with httpx.stream("POST", f"{server.url}/v1/responses", json=stalled, headers=auth("sk-one-at-a-time"), timeout=30):
        # (the head is out: a keep-alive after 0.4 s)
        refused = create(server, body(), headers=auth("sk-one-at-a-time"))
        assert refused.status_code == 429
        assert "concurrent requests" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "1"
    deadline = time.monotonic() + 10
    status = 0
    while status != 200 and time.monotonic() < deadline:  # (the router sees the client gone within 50 ms)
        status = create(server, body(), headers=auth("sk-one-at-a-time")).status_code
        time.sleep(0.05)
    assert status == 200
    # A request that fails (before anything is streamed) frees its slot too.
    assert create(server, body("status:500:up"), headers=auth("sk-one-at-a-time")).status_code == 502
    assert create(server, body(), headers=auth("sk-one-at-a-time")).status_code == 200
    # A background response holds its slot until it has finished, not until its `queued` answer.
    slow = f"{FIXTURE.removesuffix(':up')}?delay=1:up"
    queued = create(server, body(slow, store=True, background=True), headers=auth("sk-one-at-a-time"))
    assert queued.status_code == 200, queued.text
    assert create(server, body(), headers=auth("sk-one-at-a-time")).status_code == 429
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = httpx.get(f"{server.url}/v1/responses/{queued.json()['id']}", headers=auth("sk-one-at-a-time"))
        if got.json()["status"] == "completed":
            break
        time.sleep(0.1)
    assert got.json()["status"] == "completed"
    status = 0
    while status != 200 and time.monotonic() < deadline:  # (its slot is freed just after its record is final)
        status = create(server, body(), headers=auth("sk-one-at-a-time")).status_code
        time.sleep(0.05)
    assert status == 200


def check_requests(servers: list[Server]) -> None:
    """Three a minute, whichever worker or instance answers (a new connection each time)."""
    statuses = [create(servers[i % len(servers)], body(), headers=auth("sk-three")).status_code for i in range(8)]
    assert statuses.count(200) == 3, statuses
    assert statuses.count(429) == 5, statuses


def parallel(server: Server, count: int, model: str, key: str) -> list[int]:
    """`count` streamed requests at once; their statuses."""
    statuses: list[int] = []
    barrier = threading.Barrier(count)

    def one() -> None:
        barrier.wait()
        with httpx.stream("POST", f"{server.url}/v1/responses", json=body(model, stream=True), headers=auth(key),
                          timeout=30) as r:  # fmt: skip
            statuses.append(r.status_code)
            r.read()

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_limits_across_two_workers_without_redis() -> None:
    config = keys_config(TOKENS + CONCURRENT + REQUESTS)
    with router(config, env=ROUTER_ENV, extra_args=["--workers", "2"]) as server:
        check_requests([server])
        check_tokens(server)
        check_concurrency(server)


def test_limits_across_two_instances_on_redis(redis: Server) -> None:
    config = keys_config(TOKENS + CONCURRENT + REQUESTS) + store_section("redis", redis.url)
    with (
        router(config, env=ROUTER_ENV, extra_args=["--workers", "2"]) as one,
        router(config, env=ROUTER_ENV) as two,
    ):
        check_requests([one, two])
        check_tokens(two)
        check_concurrency(one)
        # Concurrent streams at once on both workers: at most 1 in flight, whoever asks.
        statuses = parallel(one, 4, f"{FIXTURE.removesuffix(':up')}?delay=0.5:up", "sk-one-at-a-time")
        assert statuses.count(200) == 1, statuses

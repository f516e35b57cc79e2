"""Routes, retries, failover and circuit breakers, through a real `ferroute serve` in front of a mock upstream
process that fails as told (HTTP statuses, a closed port, an in-band error as the first event, a first event that
never comes). A failure before the upstream's first content never reaches the client: its stream is one valid
response (checked with `check_stream`), with no `error` event."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.servers import (
    ROUTER_ENV,
    Server,
    create,
    create_ok,
    free_port,
    hedges,
    mock_upstream,
    requests_seen,
    router,
    stream,
)


def _config(upstream: str, routing: str = "") -> str:
    return f"""
[server]
keepalive_interval = 0.3

[routing]
retries = 1
backoff = 0.05
max_backoff = 1.0
breaker_failures = 2
breaker_cooldown = 1.0
retry_budget_min = 1000
{routing}

[[providers]]
name = "up"
kind = "chat_completions"
base_url = "{upstream}/v1"
api_key_env = "FERROUTE_TEST_UPSTREAM_KEY"

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{upstream}/v1"
api_key_env = "FERROUTE_TEST_UPSTREAM_KEY"

[[providers]]
name = "oai"
kind = "responses"
base_url = "{upstream}/v1"
api_key_env = "FERROUTE_TEST_UPSTREAM_KEY"

[[providers]]
name = "slow"
kind = "chat_completions"
base_url = "{upstream}/v1"
timeouts = {{ connect = 2, first_event = 0.6, idle = 1.0 }}

[[providers]]
name = "dead"
kind = "chat_completions"
base_url = "http://127.0.0.1:{free_port()}/v1"

[[routes]]
name = "closed-port"
targets = ["gen:dead", "gen?tag=cp:up"]

[[routes]]
name = "five-hundred"
targets = ["status:503:up", "gen?tag=5xx:anth"]

[[routes]]
name = "rate-limited"
targets = ["gen?fail=1000&fail_status=429&retry_after=30&tag=rl:up", "gen?tag=rl:oai"]

[[routes]]
name = "late"
targets = ["keepalives:slow", "gen?tag=late:up"]

[[routes]]
name = "in-band"
targets = ["error_first:anth", "gen?tag=ib:up"]

[[routes]]
name = "in-band-chat"
targets = ["error_first:up", "gen?tag=ibc:oai"]

[[routes]]
name = "retried"
targets = ["gen?fail=1&tag=retried:up", "gen?tag=never:anth"]

[[routes]]
name = "all-fail"
targets = ["status:500:up", "status:502:anth"]

[[routes]]
name = "weighted"
strategy = "weighted"
targets = [{{ target = "gen?tag=w3:up", weight = 3 }}, {{ target = "gen?tag=w1:up", weight = 1 }}]

[[routes]]
name = "busy"
strategy = "least_busy"
targets = ["gen?delay=1&tag=b1:up", "gen?delay=1&tag=b2:up"]

[[routes]]
name = "fast"
strategy = "latency"
targets = ["gen?delay=0.3&tag=l1:up", "gen?tag=l2:up"]

[[routes]]
name = "sticky"
strategy = "weighted"
targets = ["gen?tag=s1:up", "gen?tag=s2:anth"]

[[routes]]
name = "cross"
targets = ["status:503:oai", "gen?tag=cross:anth"]

[[routes]]
name = "flaky"
targets = ["gen?fail=3&tag=flaky:up", "gen?tag=flaky:oai"]

[[routes]]
name = "hedged"
hedge_after = 0.3
targets = ["gen?delay=3&tag=h1:up", "gen?tag=h2:anth"]

[[routes]]
name = "hedged-charged"
hedge_after = 0.3
targets = ["gen?drip=1.5&tag=hc1:anth", "gen?tag=hc2:up"]

[[routes]]
name = "hedge-lost"
hedge_after = 0.2
targets = ["gen?delay=0.5&tag=hl1:up", "gen?delay=3&tag=hl2:anth"]

[[routes]]
name = "hedge-failed"
hedge_after = 0.2
targets = ["gen?delay=0.5&tag=hf1:up", "status:503:anth"]

[[routes]]
name = "refused"
targets = ["status:404:up", "gen?tag=rf:anth"]

[[routes]]
name = "refused-hedged"
hedge_after = 0.2
targets = ["status:404:up", "gen?tag=rfh:anth"]

[[routes]]
name = "hedged-whole"
hedge_after = 0.2
targets = ["gen?delay=3&tag=hw1:up", "json:whole?tag=hw2:oai"]

[[routes]]
name = "hedge-unneeded"
hedge_after = 0.5
targets = ["gen?tag=hu1:up", "gen?tag=hu2:anth"]
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with mock_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def server(upstream: Server) -> Iterator[Server]:
    with router(_config(upstream.url), env=ROUTER_ENV) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream: Server) -> None:
    httpx.delete(f"{upstream.url}/requests", timeout=5)  # (and the `fail=<n>` counts)


def _seen(upstream: Server) -> list[tuple[str, str]]:
    """(dialect path, model) of each request the upstream received, in order."""
    return [(r["path"].rsplit("/", 1)[-1], r["body"]["model"]) for r in requests_seen(upstream)]


def _text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message" for part in item["content"])


def _both(server: Server, model: str) -> list[dict[str, Any]]:
    """The same request streamed and not: each must succeed with the route's name echoed and no error event."""
    body = {"model": model, "input": "hi"}
    events, streamed = stream(server, body)
    assert not [e for e in events if e["type"] in ("error", "response.failed")], events
    assert streamed["status"] == "completed" and streamed["model"] == model
    whole = create_ok(server, body)
    assert whole["status"] == "completed" and whole["model"] == model
    return [streamed, whole]


def test_a_closed_port_fails_over_to_the_next_target(server: Server, upstream: Server) -> None:
    for response in _both(server, "closed-port"):
        assert _text(response) == "Hello from the mock upstream."
    assert _seen(upstream) == [("completions", "gen?tag=cp")] * 2


def test_a_5xx_is_retried_then_fails_over_to_another_dialect(server: Server, upstream: Server) -> None:
    _both(server, "five-hundred")
    # `retries = 1`: the 503 target twice, then the Anthropic target answers; those two failures in a row
    # (`breaker_failures = 2`) opened the 503 target's circuit, so the second request goes to Anthropic at once.
    assert _seen(upstream) == [("completions", "status:503")] * 2 + [("messages", "gen?tag=5xx")] * 2


@pytest.mark.parametrize("route", ["refused", "refused-hedged"])
def test_an_upstreams_4xx_is_answered_not_failed_over(server: Server, upstream: Server, route: str) -> None:
    # Another target would get the same request wrong the same way: a 404 (not a 429) is the answer, hedged or not.
    response = create(server, {"model": route, "input": "hi"})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
    assert _seen(upstream) == [("completions", "status:404")]


def test_a_429_moves_to_the_next_target_at_once(server: Server, upstream: Server) -> None:
    began = time.monotonic()
    _both(server, "rate-limited")
    # Retry-After: 30 is not waited for (and no retry of the same target) when another target exists.
    assert time.monotonic() - began < 10
    model = "gen?fail=1000&fail_status=429&retry_after=30&tag=rl"
    assert _seen(upstream) == [("completions", model), ("responses", "gen?tag=rl")] * 2


def test_a_late_first_event_fails_over(server: Server, upstream: Server) -> None:
    # The first target sends only keep-alive comments: its first-event timeout (0.6 s) moves the request on. The
    # stream's start events went out before (they are the router's own); the next target's events go on from them.
    events, response = stream(server, {"model": "late", "input": "hi"})
    assert [e["type"] for e in events[:3]] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert response["status"] == "completed" and _text(response) == "Hello from the mock upstream."
    whole = create_ok(server, {"model": "late", "input": "hi"})
    assert whole["id"] != response["id"]
    # Tried and retried on the first request (two failures: its circuit opens); skipped on the second.
    assert [m for _, m in _seen(upstream)] == ["keepalives", "keepalives", "gen?tag=late", "gen?tag=late"]


@pytest.mark.parametrize("route", ["in-band", "in-band-chat"])
def test_an_in_band_error_as_the_first_event_fails_over(server: Server, upstream: Server, route: str) -> None:
    _both(server, route)
    # Tried and retried on the first request (its circuit opens), skipped on the second.
    assert [m for _, m in _seen(upstream)].count("error_first") == 2


def test_a_retry_of_the_same_target_succeeds(server: Server, upstream: Server) -> None:
    _, response = stream(server, {"model": "retried", "input": "hi"})
    assert response["status"] == "completed"
    assert _seen(upstream) == [("completions", "gen?fail=1&tag=retried")] * 2
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert (
        'ferroute_upstream_retries_total{target="gen?fail=1&tag=retried:up",'
        'next_target="gen?fail=1&tag=retried:up",code="upstream_error"}'
    ) in metrics


def test_when_every_target_fails_the_last_failure_answers(server: Server, upstream: Server) -> None:
    response = create(server, {"model": "all-fail", "input": "hi"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert [m for _, m in _seen(upstream)] == ["status:500", "status:500", "status:502", "status:502"]
    # Both circuits are open now: a 503 at once, saying when to come back, and nothing goes upstream.
    with httpx.stream(
        "POST", f"{server.url}/v1/responses", json={"model": "all-fail", "input": "hi", "stream": True}, timeout=30
    ) as r:
        r.read()
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "upstream_unavailable"
        assert r.headers["retry-after"] == "1"
    assert len(_seen(upstream)) == 4


def test_weighted_split(server: Server, upstream: Server) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(400):
            assert client.post(f"{server.url}/v1/responses", json={"model": "weighted", "input": "x"}).is_success
    models = [m for _, m in _seen(upstream)]
    assert len(models) == 400
    heavy = models.count("gen?tag=w3")
    assert 300 * 0.85 <= heavy <= 300 * 1.15, heavy


def _hold(server: Server, upstream: Server, model: str) -> threading.Thread:
    """A request for `model` started in a thread (join it), returned once the upstream has it (the upstream's
    record of requests cleared first)."""
    httpx.delete(f"{upstream.url}/requests", timeout=5)
    held = threading.Thread(target=lambda: create_ok(server, {"model": model, "input": "hi"}))
    held.start()
    deadline = time.monotonic() + 5
    while not requests_seen(upstream) and time.monotonic() < deadline:
        time.sleep(0.02)
    return held


def test_least_busy_sends_to_the_idle_target(server: Server, upstream: Server) -> None:
    for _ in range(3):
        first = _hold(server, upstream, "busy")
        create_ok(server, {"model": "busy", "input": "hi"})  # (while the first is in flight)
        first.join()
        models = [m for _, m in _seen(upstream)]
        assert sorted(models) == ["gen?delay=1&tag=b1", "gen?delay=1&tag=b2"], models


def test_least_busy_counts_the_requests_of_every_worker(upstream: Server) -> None:
    # Two workers. One request held at `held` through another route (the same target), by whichever worker takes
    # it; then each `least_busy` request, whichever worker takes it, must go to `free`: the held request counts in
    # every worker. (Counted per worker, a request taken by the other worker would see 0 and 0, a coin toss.)
    routes = """
[[routes]]
name = "pin"
targets = ["gen?delay=6&tag=held:up"]

[[routes]]
name = "balanced"
strategy = "least_busy"
targets = ["gen?delay=6&tag=held:up", "gen?tag=free:up"]
"""
    with router(_config(upstream.url, routes), env=ROUTER_ENV, extra_args=["--workers", "2"]) as two:
        for _ in range(2):
            pinned = _hold(two, upstream, "pin")
            for _ in range(8):
                with httpx.Client() as client:  # (a connection of its own: either worker may take it)
                    answer = client.post(
                        f"{two.url}/v1/responses", json={"model": "balanced", "input": "hi"}, timeout=30
                    )
                assert answer.status_code == 200, answer.text
            pinned.join()
            models = [m for _, m in _seen(upstream)]
            assert models == ["gen?delay=6&tag=held"] + ["gen?tag=free"] * 8, models


def test_latency_prefers_the_target_with_the_shorter_time_to_first_content(server: Server, upstream: Server) -> None:
    for _ in range(7):
        create_ok(server, {"model": "fast", "input": "hi"})
    models = [m for _, m in _seen(upstream)]
    # Each target is tried once (never measured: first), then the faster one is kept.
    assert sorted(models[:2]) == ["gen?delay=0.3&tag=l1", "gen?tag=l2"]
    assert models[2:] == ["gen?tag=l2"] * 5


def _circuit(server: Server, target: str) -> str:
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f'ferroute_upstream_circuit_open{{target="{target}"}}'):
            return line.rsplit(" ", 1)[1]
    raise AssertionError(f"no circuit line for {target}")


def test_breaker_opens_probes_and_closes(server: Server, upstream: Server) -> None:
    flaky = "gen?fail=3&tag=flaky"
    other = "gen?tag=flaky"
    # Two failures in a row (the attempt and its retry) open the circuit; the request fails over.
    create_ok(server, {"model": "flaky", "input": "hi"})
    assert [m for _, m in _seen(upstream)] == [flaky, flaky, other]
    assert _circuit(server, f"{flaky}:up") == "1"
    # Open: the target is skipped.
    create_ok(server, {"model": "flaky", "input": "hi"})
    assert [m for _, m in _seen(upstream)][3:] == [other]
    # After the cooldown one probe goes; it fails (the third failure): open again at once, no retry.
    time.sleep(1.1)
    create_ok(server, {"model": "flaky", "input": "hi"})
    assert [m for _, m in _seen(upstream)][4:] == [flaky, other]
    assert _circuit(server, f"{flaky}:up") == "1"
    # The next probe succeeds: closed.
    time.sleep(1.1)
    create_ok(server, {"model": "flaky", "input": "hi"})
    assert [m for _, m in _seen(upstream)][6:] == [flaky]
    assert _circuit(server, f"{flaky}:up") == "0"
    assert "circuit of target gen?fail=3&tag=flaky:up opened after 2 failures" in server.log()


def test_a_circuit_is_the_instances_with_two_workers(upstream: Server) -> None:
    # Two workers, each request on a connection of its own (either worker may take it). Two failures in a row open
    # the circuit for the instance, whichever workers saw them: no request after them reaches the failing target.
    # After the cooldown one probe goes for the instance. (Per worker, each would need two failures of its own and
    # send a probe of its own: up to 4 requests, then 2.)
    routing = "breaker_cooldown = 1.5\n"
    routes = """
[[routes]]
name = "down"
targets = ["gen?fail=100000&tag=down:up", "gen?tag=spare:up"]
"""
    config = _config(upstream.url, routes).replace("retries = 1\n", "retries = 0\n")
    config = config.replace("breaker_cooldown = 1.0\n", routing)
    down, spare = "gen?fail=100000&tag=down", "gen?tag=spare"

    def one() -> None:
        with httpx.Client() as client:  # (a connection of its own)
            answer = client.post(f"{two.url}/v1/responses", json={"model": "down", "input": "hi"}, timeout=30)
        assert answer.status_code == 200, answer.text

    with router(config, env=ROUTER_ENV, extra_args=["--workers", "2"]) as two:
        for _ in range(16):
            one()
        models = [m for _, m in _seen(upstream)]
        assert models.count(down) == 2, models
        assert models.count(spare) == 16
        # Every worker's scrape shows it open.
        assert {_circuit(two, f"{down}:up") for _ in range(6)} == {"1"}
        time.sleep(1.6)  # (cooled down: the probe fails, and opens it again at once, for both workers)
        for _ in range(16):
            one()
        models = [m for _, m in _seen(upstream)]
        assert models.count(down) == 3, models
        assert "circuit of target gen?fail=100000&tag=down:up open again: the probe failed" in two.log()


def test_models_lists_routes(server: Server) -> None:
    ids = [m["id"] for m in httpx.get(f"{server.url}/v1/models", timeout=5).json()["data"]]
    assert {"closed-port", "weighted", "busy", "fast", "flaky"} <= set(ids)


def test_the_openai_sdk_sees_one_clean_stream(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    with client.responses.stream(model="in-band", input="hi") as events:
        types = [event.type for event in events]
        final = events.get_final_response()
    assert "error" not in types and final.status == "completed"
    assert final.output_text == "Hello from the mock upstream."


def test_the_retry_budget_bounds_retries() -> None:
    with mock_upstream() as upstream:
        routing = "retries = 3\nretry_budget = 0.0\nretry_budget_min = 2"
        config = _config(upstream.url).replace("retries = 1\n", "").replace("retry_budget_min = 1000\n", "")
        config = config.replace("[routing]\n", "[routing]\n" + routing + "\n")
        with router(config, env=ROUTER_ENV) as server:
            # A plain `<model>:<provider>` retries too: 1 attempt + at most 2 retries in the window, then none.
            assert create(server, {"model": "status:503:up", "input": "hi"}).status_code == 502
            assert len(requests_seen(upstream)) == 3
            assert create(server, {"model": "status:503:up", "input": "hi"}).status_code == 502
            assert len(requests_seen(upstream)) == 4


# --- reasoning across targets --------------------------------------------------------------------------------------

REASONING = "fixture:openai-gpt-5-reasoning-summary-text"  # (an OpenAI reasoning item with its encrypted blob)


def _bodies(upstream: Server) -> list[dict[str, Any]]:
    return [r["body"] for r in requests_seen(upstream)]


def test_a_continuation_stays_on_the_target_that_made_the_previous_response(server: Server, upstream: Server) -> None:
    for _ in range(3):
        httpx.delete(f"{upstream.url}/requests", timeout=5)
        previous = create_ok(server, {"model": "sticky", "input": "hi"})
        for _ in range(5):
            previous = create_ok(server, {"model": "sticky", "input": "more", "previous_response_id": previous["id"]})
            assert previous["model"] == "sticky"
        models = {m for _, m in _seen(upstream)}
        assert len(models) == 1, models  # (a 1:1 weighted route would have split six requests)


def test_another_providers_reasoning_blob_is_left_out(server: Server, upstream: Server) -> None:
    first = create_ok(server, {"model": f"{REASONING}:oai", "input": "hi"})
    blob = next(item for item in first["output"] if item["type"] == "reasoning")
    # To the same provider: its own blob goes back (with its own item id).
    create_ok(
        server, {"model": "fixture:openai-gpt-4o-text:oai", "input": "again", "previous_response_id": first["id"]}
    )
    same = _bodies(upstream)[-1]
    assert [i for i in same["input"] if i.get("type") == "reasoning" and i.get("encrypted_content")]
    # To Anthropic: OpenAI's blob would be an invalid thinking signature there; the turn goes without it.
    create_ok(server, {"model": "gen:anth", "input": "again", "previous_response_id": first["id"]})
    other = json.dumps(_bodies(upstream)[-1])
    assert "signature" not in other and "redacted_thinking" not in other
    assert blob["id"] not in other


def test_a_failover_to_another_provider_leaves_the_blob_out(server: Server, upstream: Server) -> None:
    first = create_ok(server, {"model": f"{REASONING}:oai", "input": "hi"})
    httpx.delete(f"{upstream.url}/requests", timeout=5)
    _, response = stream(server, {"model": "cross", "input": "again", "previous_response_id": first["id"]})
    assert response["status"] == "completed"
    bodies = _bodies(upstream)
    assert [b["model"] for b in bodies][-1] == "gen?tag=cross"
    assert any(i.get("encrypted_content") for i in bodies[0]["input"] if i.get("type") == "reasoning")  # (oai)
    assert "signature" not in json.dumps(bodies[-1])


def test_a_sealed_blob_knows_its_provider(server: Server, upstream: Server) -> None:
    # A client that keeps no state gets the reasoning sealed by the router, and sends it back in the next request.
    first = create_ok(
        server,
        {"model": f"{REASONING}:oai", "input": "hi", "store": False, "include": ["reasoning.encrypted_content"]},
    )
    sealed = next(item for item in first["output"] if item["type"] == "reasoning")
    assert sealed["encrypted_content"].startswith("ferroute1.")
    history = [{"role": "user", "content": "hi"}, sealed, {"role": "user", "content": "again"}]
    create_ok(server, {"model": "gen:anth", "input": history, "store": False})
    assert "signature" not in json.dumps(_bodies(upstream)[-1])
    create_ok(server, {"model": "fixture:openai-gpt-4o-text:oai", "input": history, "store": False})
    assert any(i.get("encrypted_content") for i in _bodies(upstream)[-1]["input"] if i.get("type") == "reasoning")


def test_a_rejected_blob_is_retried_once_without_it(server: Server, upstream: Server) -> None:
    first = create_ok(server, {"model": f"{REASONING}:oai", "input": "hi"})
    httpx.delete(f"{upstream.url}/requests", timeout=5)
    # The same provider, with a key that cannot open the blob any more (the mock refuses any blob).
    second = create_ok(
        server, {"model": "gen?reject_blobs=1:oai", "input": "again", "previous_response_id": first["id"]}
    )
    assert second["status"] == "completed"
    bodies = _bodies(upstream)
    assert len(bodies) == 2
    assert any(i.get("encrypted_content") for i in bodies[0]["input"] if i.get("type") == "reasoning")
    assert not any(i.get("encrypted_content") for i in bodies[1]["input"] if i.get("type") == "reasoning")
    # Its reasoning summary still went along.
    assert any(i.get("summary") for i in bodies[1]["input"] if i.get("type") == "reasoning")


# --- hedging ----------------------------------------------------------------------------------------------------------


def _records(upstream: Server) -> dict[str, dict[str, Any]]:
    return {r["body"]["model"]: r for r in requests_seen(upstream)}


def _cancelled(upstream: Server, model: str) -> bool:
    """Whether the router hung up on the request for `model` (polled: the mock notices within 0.02 s)."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if _records(upstream)[model]["closed_early"]:
            return True
        time.sleep(0.02)
    return False


def test_a_hedge_answers_when_the_first_target_is_slow(server: Server, upstream: Server) -> None:
    # The first target would answer after 3 s: at 0.3 s the second starts, answers at once, and the first is
    # cancelled. The client gets one response, the winner's, from events that never mention the race.
    for streamed in (True, False):
        httpx.delete(f"{upstream.url}/requests", timeout=5)
        began = time.monotonic()
        if streamed:
            events, response = stream(server, {"model": "hedged", "input": "hi"})
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
            assert not [e for e in events if e["type"] in ("error", "response.failed")]
            assert [e["type"] for e in events].count("response.created") == 1
        else:
            response = create_ok(server, {"model": "hedged", "input": "hi"})
        assert time.monotonic() - began < 2.0
        assert response["status"] == "completed" and response["model"] == "hedged"
        assert [item["type"] for item in response["output"]] == ["message"]
        assert _text(response) == "Hello from the mock upstream."
        assert [m for _, m in _seen(upstream)] == ["gen?delay=3&tag=h1", "gen?tag=h2"]
        assert _cancelled(upstream, "gen?delay=3&tag=h1")
    assert hedges(server, "hedged") == {("gen?tag=h2:anth", "won"): 2.0}


def test_a_cancelled_legs_tokens_are_counted(server: Server, upstream: Server) -> None:
    # The first target (Anthropic) has sent `message_start` (5 input tokens, 1 output) and then nothing for 1.5 s;
    # the hedge (Chat Completions: 5 and 5) wins. The response's usage is both calls'.
    response = create_ok(server, {"model": "hedged-charged", "input": "hi"})
    assert _text(response) == "Hello from the mock upstream."
    assert _cancelled(upstream, "gen?drip=1.5&tag=hc1")
    usage = response["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (10, 6), usage


def test_when_the_first_target_answers_first_the_hedge_is_cancelled(server: Server, upstream: Server) -> None:
    _, response = stream(server, {"model": "hedge-lost", "input": "hi"})
    assert response["status"] == "completed"
    assert [m for _, m in _seen(upstream)] == ["gen?delay=0.5&tag=hl1", "gen?delay=3&tag=hl2"]
    assert _cancelled(upstream, "gen?delay=3&tag=hl2")
    assert not _records(upstream)["gen?delay=0.5&tag=hl1"]["closed_early"]
    assert hedges(server, "hedge-lost") == {("gen?delay=3&tag=hl2:anth", "lost"): 1.0}


def test_a_failed_hedge_leaves_the_first_target_running(server: Server, upstream: Server) -> None:
    events, response = stream(server, {"model": "hedge-failed", "input": "hi"})
    assert not [e for e in events if e["type"] in ("error", "response.failed")]
    assert response["status"] == "completed" and _text(response) == "Hello from the mock upstream."
    assert [m for _, m in _seen(upstream)] == ["gen?delay=0.5&tag=hf1", "status:503"]
    assert hedges(server, "hedge-failed") == {("status:503:anth", "failed"): 1.0}


def test_a_hedge_that_answers_with_a_whole_body_wins(server: Server, upstream: Server) -> None:
    # The hedge's upstream answers with one JSON body where a stream was asked for: it is content, it wins, and
    # the client's stream (or whole response) is that answer, once.
    for response in _both(server, "hedged-whole"):
        assert [item["type"] for item in response["output"]] == ["reasoning", "message", "function_call"]
        assert _text(response) == "Checking."
    assert hedges(server, "hedged-whole") == {("json:whole?tag=hw2:oai", "won"): 2.0}
    assert _cancelled(upstream, "gen?delay=3&tag=hw1")


def test_no_hedge_when_the_first_content_comes_in_time(server: Server, upstream: Server) -> None:
    for _ in range(3):
        _both(server, "hedge-unneeded")
    assert [m for _, m in _seen(upstream)] == ["gen?tag=hu1"] * 6
    assert hedges(server, "hedge-unneeded") == {}

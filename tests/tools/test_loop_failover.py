"""A tool loop on a route fails over as a plain request does: until an upstream call's first content, a failure of
it (a closed port, a 5xx, a first event that never comes, an in-band error as the first event) is retried or moved
to the next target, in another dialect where the target speaks one. What went out before (the listing, an earlier
turn's items) stays; the client's stream is one valid response with no error. Through a real `ferroute serve`, the
demo MCP server and the mock upstream's `agent` model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.servers import ROUTER_ENV, Server, create, create_ok, hedges, router, shared_upstream, stream
from tests.support.tools import CALC, hosted, text_of, tools_config, upstream_calls

ROUTES = """
[routing]
retries = 1
backoff = 0.05
max_backoff = 0.5
breaker_failures = 100
retry_budget_min = 1000

[[routes]]
name = "tools-closed"
targets = ["agent?tag=closed:dead", "agent?tag=closed:anth"]

[[routes]]
name = "tools-503"
targets = ["agent?fail=1000&fail_status=503&tag=t503:up", "agent?tag=t503:oai"]

[[routes]]
name = "tools-late"
targets = ["keepalives?tag=late:slow", "agent?tag=late:anth"]

[[routes]]
name = "tools-in-band"
targets = ["error_first?tag=inband:anth", "agent?tag=inband:up"]

[[routes]]
name = "tools-all-fail"
targets = ["status:500:up", "status:502:anth"]

[[routes]]
name = "tools-later"
targets = ["agent?fail_from=2&tag=later:up", "agent?tag=later:oai"]

[[routes]]
name = "tools-later-blob"
targets = ["agent?fail_from=2&tag=blob:anth", "agent?tag=blob:anth2"]

[[routes]]
name = "tools-later-all-fail"
targets = ["agent?fail_from=2&tag=lateall:up", "agent?fail_from=1&tag=lateall:oai"]

[[routes]]
name = "tools-hedged"
hedge_after = 0.3
targets = ["agent?delay=3&tag=lh:up", "agent?tag=lh:anth"]

[[routes]]
name = "tools-hedged-later"
hedge_after = 0.3
targets = ["agent?drip=1.5&slow_from=2&tag=lhl:anth", "agent?tag=lhl:up"]

[[routes]]
name = "tools-hedge-lost"
hedge_after = 0.2
targets = ["agent?delay=0.6&slow_from=2&tag=lhx:up", "agent?delay=3&tag=lhx:oai"]

[[routes]]
name = "tools-hedge-unneeded"
hedge_after = 0.5
targets = ["agent?tag=lhu:up", "agent?tag=lhu:anth"]

[[routes]]
name = "tools-hedge-refused"
hedge_after = 0.2
targets = ["agent?delay=0.6&slow_from=2&tag=lhr:up", "status:404:anth"]
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # (A second Anthropic provider: another account, whose key opens none of the first one's signatures.)
    second = f"""
[[providers]]
name = "anth2"
kind = "anthropic"
base_url = "{shared_upstream().url}/v1"
api_key_env = "FERROUTE_TEST_UPSTREAM_KEY"
"""
    with router(tools_config() + second + ROUTES, env=ROUTER_ENV) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh() -> None:
    httpx.delete(f"{shared_upstream().url}/requests", timeout=5)  # (and the `fail=<n>` counts)


def _loop(server: Server, route: str, streamed: bool) -> dict[str, Any]:
    body = {"model": route, "input": 'call add {"a": 2, "b": 3}', "tools": [CALC]}
    if not streamed:
        return create_ok(server, body)
    events, response = stream(server, body)  # (checked by the grammar helper: one sequence, no gap)
    assert not [e for e in events if e["type"] in ("error", "response.failed")], events
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    return response


# The route, the tag its requests carry, and the dialect paths its attempts reach, in order (a closed port reaches
# nothing; a late first event and an in-band error are retried once on their target).
CASES = [
    ("tools-closed", "closed", ["messages", "messages"]),
    ("tools-503", "t503", ["completions", "completions", "responses", "responses"]),
    ("tools-late", "late", ["completions", "completions", "messages", "messages"]),
    ("tools-in-band", "inband", ["messages", "messages", "completions", "completions"]),
]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("route", "tag", "paths"), CASES, ids=[case[0] for case in CASES])
def test_the_first_upstream_call_of_a_loop_fails_over(
    server: Server, route: str, tag: str, paths: list[str], streamed: bool
) -> None:
    response = _loop(server, route, streamed)
    assert response["status"] == "completed" and response["model"] == route
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    (call,) = hosted(response["output"], "mcp_call")
    assert call["output"] in ("5", "5.0") and call["status"] == "completed"
    assert text_of(response) == f"Results: add={call['output']}"
    # The failed attempts, then the loop's two upstream calls at the target that answered.
    assert [r["path"].rsplit("/", 1)[-1] for r in upstream_calls(f"tag={tag}")] == paths
    # The stored response is the one the client saw.
    stored = httpx.get(f"{server.url}/v1/responses/{response['id']}", timeout=5).json()
    assert [item["id"] for item in stored["output"]] == [item["id"] for item in response["output"]]


def test_when_every_target_fails_the_loop_fails_as_without_failover(server: Server) -> None:
    body = {"model": "tools-all-fail", "input": 'call add {"a": 2, "b": 3}', "tools": [CALC]}
    whole = create(server, body)
    assert whole.status_code == 502 and whole.json()["error"]["code"] == "upstream_error"
    # Streamed, the listing went out first: the failure is in-band, after it.
    events, response = stream(server, body)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert response["status"] == "failed"
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools"]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_later_upstream_call_of_a_loop_fails_over(server: Server, streamed: bool) -> None:
    # The first call (at `up`) calls the tool; the second fails there, is retried there, and moves to `oai`, which
    # answers in its own dialect. The client sees the call and the answer, and nothing of the failures.
    response = _loop(server, "tools-later", streamed)
    assert response["status"] == "completed" and response["model"] == "tools-later"
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    (call,) = hosted(response["output"], "mcp_call")
    assert text_of(response) == f"Results: add={call['output']}"
    paths = [r["path"].rsplit("/", 1)[-1] for r in upstream_calls("tag=later")]
    assert paths == ["completions", "completions", "completions", "responses"]
    # The turn that moved carried the conversation so far: the call and its result.
    moved = upstream_calls("tag=later")[-1]["body"]
    kinds = [item.get("type") for item in moved["input"]]
    assert "function_call" in kinds and "function_call_output" in kinds, moved["input"]
    stored = httpx.get(f"{server.url}/v1/responses/{response['id']}", timeout=5).json()
    assert [item["id"] for item in stored["output"]] == [item["id"] for item in response["output"]]


def test_a_later_call_that_moves_to_another_provider_leaves_the_reasoning_blob_behind(server: Server) -> None:
    # The first turn (at `anth`) thinks (a signed thinking block) and calls the tool; the second call fails there
    # (and its retry) and the loop moves to `anth2`, another Anthropic account: the thinking's signature, which
    # only `anth` can verify, stays behind (Anthropic refuses a turn whose signature it cannot verify).
    body = {"model": "tools-later-blob", "input": 'think, then call add {"a": 2, "b": 3}', "tools": [CALC]}
    events, response = stream(server, body)
    assert not [e for e in events if e["type"] in ("error", "response.failed")], events
    assert response["status"] == "completed" and hosted(response["output"], "mcp_call")
    assert hosted(response["output"], "reasoning")
    calls = upstream_calls("tag=blob")
    assert [c["body"]["model"] for c in calls] == ["agent?fail_from=2&tag=blob"] * 3 + ["agent?tag=blob"]
    # At `anth` the signature went back with the thinking (its own); at `anth2` it did not.
    assert ["sig-agent-" in json.dumps(c["body"]) for c in calls] == [False, True, True, False]


def test_when_every_target_fails_a_later_call_the_loop_fails_as_without_failover(server: Server) -> None:
    body = {"model": "tools-later-all-fail", "input": 'call add {"a": 2, "b": 3}', "tools": [CALC]}
    events, response = stream(server, body)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert response["status"] == "failed"
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "mcp_call"]


def test_a_later_call_starts_at_the_next_target_when_the_loops_target_opened_meanwhile() -> None:
    # While the loop's tool runs (1.5 s), another request fails at the loop's target and opens its circuit (one
    # failure opens it here): the loop's next call starts at the route's next target, without trying the open one.
    routes = """
[routing]
breaker_failures = 1
breaker_cooldown = 30

[[routes]]
name = "switch"
targets = ["agent?fail_from=2&tag=sw:up", "agent?tag=sw:oai"]
"""
    with router(tools_config() + routes, env=ROUTER_ENV) as server:
        body = {"model": "switch", "input": 'call sleep {"seconds": 1.5}', "tools": [CALC]}
        loop: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: loop.update(stream(server, body)[1]))
        worker.start()
        deadline = time.monotonic() + 10
        while not upstream_calls("tag=sw") and time.monotonic() < deadline:
            time.sleep(0.02)
        other = create_ok(server, {"model": "switch", "input": "hi"})  # (fails at `up`: the circuit opens)
        assert other["status"] == "completed"
        worker.join(30)
        assert loop["status"] == "completed" and hosted(loop["output"], "mcp_call")
        paths = [c["path"].rsplit("/", 1)[-1] for c in upstream_calls("tag=sw")]
        # The loop's first call, the other request's failure and its failover, the loop's second call at `oai`.
        assert paths == ["completions", "completions", "responses", "responses"], paths
        assert "circuit of target agent?fail_from=2&tag=sw:up opened after 1 failures" in server.log()


# --- hedging: a route's `hedge_after` races each upstream call of a loop ---------------------------------------------


def _closed_early(tag: str, model: str) -> bool:
    """Whether the router hung up on the call for `model` (polled: the mock notices within 0.02 s)."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if any(c["closed_early"] for c in upstream_calls(tag) if c["body"]["model"] == model):
            return True
        time.sleep(0.02)
    return False


def _charged(tag: str) -> int:
    """The input tokens the mock charged for the calls with `tag`: a quarter of each request body's bytes."""
    return sum(max(1, int(c["headers"]["content-length"]) // 4) for c in upstream_calls(tag))


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_loops_first_call_is_hedged_when_its_target_is_slow(server: Server, streamed: bool) -> None:
    # The first call's target would answer after 3 s: at 0.3 s the route's next target (another dialect) starts
    # beside it and answers; the slow one is cancelled, and the loop goes on where the winner is.
    began = time.monotonic()
    response = _loop(server, "tools-hedged", streamed)
    assert time.monotonic() - began < 2.5
    assert response["status"] == "completed" and response["model"] == "tools-hedged"
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    (call,) = hosted(response["output"], "mcp_call")
    assert text_of(response) == f"Results: add={call['output']}"
    calls = upstream_calls("tag=lh")
    assert [(c["body"]["model"], c["path"].rsplit("/", 1)[-1]) for c in calls] == [
        ("agent?delay=3&tag=lh", "completions"),
        ("agent?tag=lh", "messages"),
        ("agent?tag=lh", "messages"),  # (the second call: where the loop is, fast, not hedged)
    ]
    assert _closed_early("tag=lh", "agent?delay=3&tag=lh")
    stored = httpx.get(f"{server.url}/v1/responses/{response['id']}", timeout=5).json()
    assert [item["id"] for item in stored["output"]] == [item["id"] for item in response["output"]]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_loops_later_call_is_hedged_on_the_response_so_far(server: Server, streamed: bool) -> None:
    # The first call (Anthropic) calls the tool at once; the second has sent `message_start` (its input tokens) and
    # then nothing for 1.5 s: at 0.3 s a Chat Completions target starts beside it with the conversation so far, and
    # answers. The items that went out before stay, the winner's answer follows, and every call's tokens are the
    # response's, each once (the earlier turn's are not counted again for the cancelled one).
    response = _loop(server, "tools-hedged-later", streamed)
    assert response["status"] == "completed"
    assert [item["type"] for item in response["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    (call,) = hosted(response["output"], "mcp_call")
    assert text_of(response) == f"Results: add={call['output']}"
    calls = upstream_calls("tag=lhl")
    assert [c["path"].rsplit("/", 1)[-1] for c in calls] == ["messages", "messages", "completions"]
    kinds = [m.get("role") for m in calls[-1]["body"]["messages"]]
    assert "tool" in kinds, calls[-1]["body"]["messages"]  # (the hedge carried the call and its result)
    assert _closed_early("tag=lhl", "agent?drip=1.5&slow_from=2&tag=lhl")
    assert response["usage"]["input_tokens"] == _charged("tag=lhl")
    assert hedges(server, "tools-hedged-later")[("agent?tag=lhl:up", "won")] >= 1


def test_a_loops_hedge_loses_to_a_first_call_that_answers_first(server: Server) -> None:
    # The second call is slow (0.6 s) but the hedge started at 0.2 s is slower (3 s): the first answers, the hedge
    # is cancelled, and its request leaves no trace in the response but its tokens (none: it sent nothing).
    events, response = stream(
        server, {"model": "tools-hedge-lost", "input": 'call add {"a": 2, "b": 3}', "tools": [CALC]}
    )
    assert not [e for e in events if e["type"] in ("error", "response.failed")]
    assert response["status"] == "completed" and text_of(response).startswith("Results: add=")
    calls = upstream_calls("tag=lhx")
    assert [c["path"].rsplit("/", 1)[-1] for c in calls] == ["completions", "completions", "responses"]
    assert _closed_early("tag=lhx", "agent?delay=3&tag=lhx")
    assert response["usage"]["input_tokens"] == _charged("tag=lhx") - max(
        1, int(calls[-1]["headers"]["content-length"]) // 4
    )
    assert hedges(server, "tools-hedge-lost") == {("agent?delay=3&tag=lhx:oai", "lost"): 1.0}


def test_a_loops_hedge_that_fails_leaves_the_first_call_running(server: Server) -> None:
    # The hedge gets a 404 (an error no other attempt would be spared): the first call goes on and answers.
    events, response = stream(
        server, {"model": "tools-hedge-refused", "input": 'call add {"a": 2, "b": 3}', "tools": [CALC]}
    )
    assert not [e for e in events if e["type"] in ("error", "response.failed")]
    assert response["status"] == "completed" and text_of(response).startswith("Results: add=")
    assert hedges(server, "tools-hedge-refused") == {("status:404:anth", "failed"): 1.0}


def test_no_hedge_when_each_call_of_a_loop_answers_in_time(server: Server) -> None:
    # The tool takes 0.7 s, longer than `hedge_after`: each call's time to content runs from its own start.
    body = {"model": "tools-hedge-unneeded", "input": 'call sleep {"seconds": 0.7}', "tools": [CALC]}
    events, response = stream(server, body)
    assert not [e for e in events if e["type"] in ("error", "response.failed")]
    assert response["status"] == "completed" and hosted(response["output"], "mcp_call")
    assert [c["path"].rsplit("/", 1)[-1] for c in upstream_calls("tag=lhu")] == ["completions", "completions"]
    assert hedges(server, "tools-hedge-unneeded") == {}


def test_a_loops_call_whose_blob_is_refused_goes_again_without_it(server: Server) -> None:
    # The first response thinks (a signed thinking block, stored). The continuation runs a loop at the same provider
    # with a key that opens no blob any more (the mock refuses any): its first call goes once more without the
    # signature, and the loop's later call does not carry it again (no second refusal).
    body = {"model": "agent:anth", "input": 'think, then call add {"a": 2, "b": 3}', "tools": [CALC]}
    first = create_ok(server, {**body, "input": body["input"] + " tag=rb0"})
    assert hosted(first["output"], "reasoning")
    httpx.delete(f"{shared_upstream().url}/requests", timeout=5)
    again = {
        "model": "agent?reject_blobs=1&tag=rb:anth",
        "input": 'call add {"a": 1, "b": 1}',
        "tools": [CALC],
        "previous_response_id": first["id"],
    }
    events, response = stream(server, again)
    assert not [e for e in events if e["type"] in ("error", "response.failed")], events
    assert response["status"] == "completed" and text_of(response).startswith("Results: add=")
    calls = upstream_calls("tag=rb")
    assert ["sig-agent-" in json.dumps(c["body"]) for c in calls] == [True, False, False]
    assert [c["path"].rsplit("/", 1)[-1] for c in calls] == ["messages"] * 3
    # (Anthropic takes no thinking without its signature: the thinking's text does not go either.)
    assert "The tools will tell." in json.dumps(calls[0]["body"])
    assert "The tools will tell." not in json.dumps(calls[1]["body"])
    assert response["usage"]["input_tokens"] > 0

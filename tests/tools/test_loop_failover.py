"""A tool loop on a route fails over as a plain request does: until the upstream's first content, a failure of its
first upstream call (a closed port, a 5xx, a first event that never comes, an in-band error as the first event) is
retried or moved to the next target, in another dialect where the target speaks one. The listing that went out
before stays; the client's stream is one valid response with no error. Through a real `ferroute serve`, the demo MCP
server and the mock upstream's `agent` model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.servers import ROUTER_ENV, Server, create, create_ok, router, shared_upstream, stream
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
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with router(tools_config() + ROUTES, env=ROUTER_ENV) as server:
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

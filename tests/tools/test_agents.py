"""Sub-agents (`ferroute:agent`) end to end: the model calls a function, the router runs a nested response on
another model with its own tools and loop (stored, readable with GET), and the nested response's final text is the
call's output. The mock upstream's `agent` model follows `call <tool> <json>` directives, so a nested task can
itself name the tools the nested model is to call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.mcp_server import shared_mcp_demo
from tests.support.servers import ROUTER_ENV, Server, create, create_ok, router, stream
from tests.support.tools import CALC, DIALECTS, hosted, text_of, tools_config


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with router(tools_config() + "\n[agents]\nmax_depth = 2\n", env=ROUTER_ENV) as server:
        yield server


def directive(tool: str, arguments: dict[str, Any]) -> str:
    return f"call {tool} {json.dumps(arguments)}"


def agent(name: str, model: str, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ferroute:agent", "name": name, "model": model, "instructions": "Be brief."}
    if tools is not None:
        spec["tools"] = tools
    return spec


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_sub_agent_with_its_own_mcp_tool(server: Server, dialect: str, streamed: bool) -> None:
    model = DIALECTS[dialect]
    task = directive("add", {"a": 20, "b": 22})
    body = {"model": model, "input": directive("helper", {"task": task}), "tools": [agent("helper", model, [CALC])]}
    if streamed:
        events, response = stream(server, body)
        types = [e["type"] for e in events]
        assert "ferroute:agent_call.in_progress" in types and "ferroute:agent_call.completed" in types
        deltas = "".join(e["delta"] for e in events if e["type"] == "ferroute:agent_call.output_text.delta")
    else:
        response = create_ok(server, body)
    [call] = hosted(response["output"], "ferroute:agent_call")
    assert call["status"] == "completed" and call["name"] == "helper"
    assert json.loads(call["arguments"]) == {"task": task}
    assert call["output"].startswith("Results: add=42")
    if streamed:
        assert deltas == call["output"]
    assert text_of(response).endswith(f"Results: helper={call['output']}")
    # The nested response is stored like any other, with its own loop's items.
    nested = httpx.get(f"{server.url}/v1/responses/{call['response_id']}", timeout=5).json()
    assert nested["status"] == "completed" and nested["model"] == model
    assert [item["type"] for item in nested["output"]][:2] == ["mcp_list_tools", "mcp_call"]
    # Its usage is counted in the parent's.
    assert response["usage"]["total_tokens"] > nested["usage"]["total_tokens"] > 0


def test_the_depth_limit_refuses_a_deeper_agent(server: Server) -> None:
    model = DIALECTS["chat"]
    # This request is depth 0; "outer" runs at 1, "deeper" at 2 = max_depth, so its own "deepest" is refused.
    deeper = agent("deeper", model, [agent("deepest", model, [CALC]), CALC])
    t2 = directive("deepest", {"task": directive("add", {"a": 1, "b": 1})})
    t1 = directive("deeper", {"task": t2})
    body = {"model": model, "input": directive("outer", {"task": t1}), "tools": [agent("outer", model, [deeper])]}
    response = create_ok(server, body)

    def only_agent_call(output: list[dict[str, Any]]) -> dict[str, Any]:
        [call] = hosted(output, "ferroute:agent_call")
        return call

    outer = only_agent_call(response["output"])
    outer_response = httpx.get(f"{server.url}/v1/responses/{outer['response_id']}", timeout=5).json()
    deeper_call = only_agent_call(outer_response["output"])
    assert deeper_call["status"] == "completed"
    deeper_response = httpx.get(f"{server.url}/v1/responses/{deeper_call['response_id']}", timeout=5).json()
    refused = only_agent_call(deeper_response["output"])
    assert refused["status"] == "failed" and refused["response_id"] is None
    assert "nest at most 2" in refused["error"]["message"]
    assert "nest at most 2" in deeper_call["output"]


def test_a_sub_agent_on_an_unknown_model_fails_its_call_not_the_response(server: Server) -> None:
    body = {
        "model": DIALECTS["chat"],
        "input": directive("helper", {"task": "anything"}),
        "tools": [agent("helper", "nope:no-such-provider")],
    }
    response = create_ok(server, body)
    [call] = hosted(response["output"], "ferroute:agent_call")
    assert call["status"] == "failed" and call["error"]["code"] in (400, 404)
    assert response["status"] == "completed"


def test_a_sub_agent_takes_hosted_tools_only(server: Server) -> None:
    spec = agent("helper", DIALECTS["chat"], [{"type": "function", "name": "f"}])
    response = create(server, {"model": DIALECTS["chat"], "input": "hi", "tools": [spec]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "tools[0].tools"


def test_a_chain_continues_after_a_sub_agent(server: Server) -> None:
    model = DIALECTS["anthropic"]
    tools = [agent("helper", DIALECTS["chat"], [CALC])]
    first = create_ok(
        server,
        {"model": model, "input": directive("helper", {"task": directive("add", {"a": 1, "b": 2})}), "tools": tools},
    )
    second = create_ok(server, {"model": model, "previous_response_id": first["id"], "input": "thanks", "tools": tools})
    assert second["status"] == "completed"


def test_a_sub_agent_cannot_ask_for_approval(server: Server) -> None:
    model = DIALECTS["chat"]
    guarded = {"type": "mcp", "server_label": "calc", "require_approval": "always"}
    body = {"model": model, "input": directive("helper", {"task": directive("add", {"a": 1, "b": 1})}),
            "tools": [agent("helper", model, [{**guarded, "server_label": "guarded",
                                                "server_url": shared_mcp_demo().url}])]}  # fmt: skip
    response = create_ok(server, body)
    [call] = hosted(response["output"], "ferroute:agent_call")
    assert call["status"] == "completed" and "needs approval" in call["output"]
    nested = httpx.get(f"{server.url}/v1/responses/{call['response_id']}", timeout=5).json()
    assert not hosted(nested["output"], "mcp_approval_request")
